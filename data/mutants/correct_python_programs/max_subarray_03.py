def max_subarray_03(arr):
    """Return the largest sum of a non-empty contiguous slice of arr (Kadane)."""
    best = current = arr[0]
    for x in arr[1:]:
        current = max(x, current + x)
        best = max(best, current)
    return best
