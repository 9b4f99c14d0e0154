def gcd_06(a, b):
    """Return the greatest common divisor of the non-negative integers a and b."""
    while b:
        a, b = b, a % b
    return a
