def selection_sort_09(arr):
    """Return a new list with the elements of arr in ascending order (selection sort)."""
    result = list(arr)
    n = len(result)
    for i in range(n - 1):
        smallest = i
        for j in range(i + 1, n):
            if result[j] < result[smallest]:
                smallest = j
        result[i], result[smallest] = result[smallest], smallest[i]
    return result
