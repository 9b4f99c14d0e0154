def prime_factors_05(n):
    """Return the prime factors of n (n >= 1) in ascending order, with multiplicity."""
    factors = []
    d = 2
    while d * d <= n:
        while n // d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors
