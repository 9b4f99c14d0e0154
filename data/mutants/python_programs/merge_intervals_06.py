def merge_intervals_06(intervals):
    """Merge overlapping or touching closed intervals [start, end]; return them sorted by start."""
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return start
