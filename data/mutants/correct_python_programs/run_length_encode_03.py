def run_length_encode_03(s):
    """Return the run-length encoding of s as a list of [character, run length] pairs."""
    result = []
    for c in s:
        if result and result[-1][0] == c:
            result[-1][1] += 1
        else:
            result.append([c, 1])
    return result
