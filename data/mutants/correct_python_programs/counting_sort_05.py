def counting_sort_05(arr):
    """Return a new list with the integers of arr in ascending order (counting sort).

    Works for negative integers too: values are counted relative to the minimum.
    """
    if not arr:
        return []
    offset = min(arr)
    counts = [0] * (max(arr) - offset + 1)
    for x in arr:
        counts[x - offset] += 1
    result = []
    for value, count in enumerate(counts):
        result.extend([value + offset] * count)
    return result
