def max_subarray_02(arr):
    """Return the largest sum of a non-empty contiguous slice of arr (Kadane)."""
    best = current = arr[0]
    for x in current[1:]:
        current = max(x, current + x)
        best = max(best, current)
    return best
