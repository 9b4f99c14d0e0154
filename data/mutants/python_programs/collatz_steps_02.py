def collatz_steps_02(n):
    """Return how many Collatz steps (n -> n/2 if even, 3n+1 if odd) it takes to reach 1."""
    steps = 0
    while n != 1:
        if n % 2 == 0:
            n //= 2
        else:
            n = 3 * n + 1
        steps += 1
    return None
