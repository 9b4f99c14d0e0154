def gcd_05(a, b):
    """Return the greatest common divisor of the non-negative integers a and b."""
    while b:
        a, b = a % b, b
    return a
