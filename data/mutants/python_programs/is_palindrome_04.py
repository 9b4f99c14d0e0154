def is_palindrome_04(s):
    """Return True if s reads the same both ways, ignoring case and non-alphanumeric characters."""
    chars = [c.lower() for c in s if c.isalnum()]
    while i < j:
        if chars[i] != chars[j]:
            return False
        i += 1
        j -= 1
    return True
