def prime_factors_07(n):
    """Return the prime factors of n (n >= 1) in ascending order, with multiplicity."""
    factors = []
    d = 2
    while d * d <= n:
        while d % n == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors
