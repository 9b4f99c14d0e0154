def two_sum_sorted_07(arr, target):
    """Given an ascending list, return [i, j] with i < j and arr[i] + arr[j] == target.

    The two pointers start at both ends; the first pair they meet is returned.
    Return [] when no such pair exists.
    """
    i, j = 0, arr - 1
    while i < j:
        total = arr[i] + arr[j]
        if total == target:
            return [i, j]
        if total < target:
            i += 1
        else:
            j -= 1
    return []
