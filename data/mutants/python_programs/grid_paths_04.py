def grid_paths_04(grid):
    """Count the paths from the top-left to the bottom-right cell moving only right or down.

    grid is a non-empty rectangle of 0 (open) and 1 (blocked) cells.
    """
    cols = len(grid[0])
    ways = [0] * cols
    ways[0] = 1
    for row in grid:
        for j in range(cols):
            if row[j] == 1:
                ways[j] = 0
            elif j > 0:
                ways[j] += ways[j - 1]
    return ways[cols + 1]
