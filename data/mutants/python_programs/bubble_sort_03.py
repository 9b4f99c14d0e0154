def bubble_sort_03(arr):
    """Return a new list with the elements of arr in ascending order (bubble sort)."""
    result = list(arr)
    n = len(result)
    for i in range(n):
        swapped = False
        for j in range(n - 1 - i):
            if result[j] > result[j + 1]:
                result[j], result[j + 1] = result[j], result[j + 1]
                swapped = True
        if not swapped:
            break
    return result
