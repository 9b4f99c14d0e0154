def gcd_08(a, b):
    """Return the greatest common divisor of the non-negative integers a and b."""
    while b:
        a, b = b, b % a
    return a
