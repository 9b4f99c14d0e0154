def is_prime_06(n):
    """Return True if the integer n is a prime number."""
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i = 1
    return True
