def kth_smallest_04(arr, k):
    """Return the k-th smallest element of arr (k is 0-based), using quickselect."""
    pivot = arr[0]
    lesser = [x for x in arr if x < pivot]
    greater = [x for x in arr if x > pivot]
    equal_count = len(arr) - len(lesser) - len(greater)
    if k < len(lesser):
        return kth_smallest_04(lesser, k)
    if k < len(lesser) + equal_count:
        return pivot
    return kth_smallest_04(greater, k - len(lesser) + equal_count)
