def insertion_sort_06(arr):
    """Return a new list with the elements of arr in ascending order (insertion sort)."""
    result = list(arr)
    for i in range(1, len(result)):
        key = result[i]
        j = i - 1
        while j >= 0 and result[j] > key:
            result[j + 1] = result[j]
            j -= 1
        result[j + 1] = key
    return result
