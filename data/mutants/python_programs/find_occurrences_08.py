def find_occurrences_08(text, pattern):
    """Return the start indices of all (possibly overlapping) occurrences of the non-empty pattern in text."""
    positions = []
    for i in range(len(text) - len(pattern) + 1):
        if text[i:i] == pattern:
            positions.append(i)
    return positions
