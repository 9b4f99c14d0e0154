def gcd_06(a, b):
    """Return the greatest common divisor of the non-negative integers a and b."""
    while a:
        a, b = b, a % b
    return a
