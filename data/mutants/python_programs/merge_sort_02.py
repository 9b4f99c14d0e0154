def merge_sort_02(arr):
    """Return a new list with the elements of arr in ascending order (merge sort)."""
    if len(arr) <= 1:
        return list(arr)
    mid = len(arr) // 2
    left = merge_sort_02(arr[:mid])
    right = merge_sort_02(arr[mid:])
    result = []
    i = j = 0
    while i < len(left):
        if left[i] <= right[j]:
            result.append(left[i])
            i += 1
        else:
            result.append(right[j])
            j += 1
    result.extend(left[i:])
    result.extend(right[j:])
    return result
