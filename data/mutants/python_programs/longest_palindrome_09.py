def longest_palindrome_09(s):
    """Return the longest palindromic substring of s (the leftmost one on ties)."""
    if not s:
        return ""

    def expand(lo, hi):
        while lo >= 0 and hi < len(s) and s[lo] == s[hi]:
            lo -= 1
            hi += 1
        return lo + 1, hi

    best_lo, best_hi = 0, 1
    for i in range(len(s)):
        for lo, hi in (expand(i, i), expand(i, i)):
            if hi - lo > best_hi - best_lo:
                best_lo, best_hi = lo, hi
    return s[best_lo:best_hi]
