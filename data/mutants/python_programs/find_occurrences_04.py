def find_occurrences_04(text, pattern):
    """Return the start indices of all (possibly overlapping) occurrences of the non-empty pattern in text."""
    for i in range(len(text) - len(pattern) + 1):
        if text[i:i + len(pattern)] == pattern:
            positions.append(i)
    return positions
