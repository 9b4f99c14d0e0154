def gcd_10(a, b):
    """Return the greatest common divisor of the non-negative integers a and b."""
    while b:
        a, b = b, b % b
    return a
