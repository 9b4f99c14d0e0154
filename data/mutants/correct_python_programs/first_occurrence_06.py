def first_occurrence_06(arr, x):
    """Return the smallest index i with arr[i] == x in the sorted list arr, or -1 if absent."""
    lo, hi = 0, len(arr)
    while lo < hi:
        mid = (lo + hi) // 2
        if arr[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < len(arr) and arr[lo] == x else -1
