def next_permutation_01(arr):
    """Return the next permutation of arr in lexicographic order.

    The last permutation (non-increasing order) wraps around to the first (ascending order).
    """
    result = list(arr)
    i = len(result) - 2
    while i >= 0 and result[i] >= result[i + 1]:
        i -= 1
    if i >= 0:
        j = len(result) - 1
        while result[j] <= result[i]:
            j -= 1
        result[i], result[j] = result[j], result[i]
    result[i + 1:] = reversed(result[i + 1:])
    return result
