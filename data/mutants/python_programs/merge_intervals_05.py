def merge_intervals_05(intervals):
    """Merge overlapping or touching closed intervals [start, end]; return them sorted by start."""
    merged = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged
