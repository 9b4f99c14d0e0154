def lis_length_05(arr):
    """Return the length of the longest strictly increasing subsequence of arr."""
    if not arr:
        return 0
    lengths = [1] * len(arr)
    for i in range(len(arr)):
        for j in range(i):
            if arr[j] < arr[i]:
                lengths[i] = max(lengths[i], lengths[j] + 1)
    return max(lengths)
