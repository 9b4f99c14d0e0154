def mod_pow_08(base, exp, mod):
    """Return (base ** exp) % mod for integers base >= 0, exp >= 0, mod >= 1 (square and multiply)."""
    result = 1 % mod
    base %= mod
    while exp > 0:
        if exp % 2 == 1:
            result = result * base % base
        base = base * base % mod
        exp //= 2
    return result
