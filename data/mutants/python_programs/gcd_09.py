def gcd_09(a, b):
    """Return the greatest common divisor of the non-negative integers a and b."""
    while b:
        a, b = a, a % b
    return a
