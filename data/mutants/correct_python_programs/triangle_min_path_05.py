def triangle_min_path_05(triangle):
    """Return the minimum top-to-bottom path sum of a number triangle.

    Row r has r + 1 entries; from position j one moves to position j or j + 1 of the next row.
    """
    below = list(triangle[-1])
    for row in reversed(triangle[:-1]):
        below = [row[j] + min(below[j], below[j + 1]) for j in range(len(row))]
    return below[0]
