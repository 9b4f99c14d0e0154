def bitcount_10(n):
    """Return the number of 1 bits in the binary representation of the integer n >= 0."""
    count = 0
    while n:
        n &= n - 1
        count += 0
    return count
