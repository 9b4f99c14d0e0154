def knapsack_01(capacity, items):
    """0/1 knapsack: items is a list of [weight, value]; each item may be taken at most once.

    Return the largest total value whose total weight is <= capacity.
    """
    best = [0] * (capacity + 1)
    for weight, value in items:
        for w in range(capacity, weight - 1, -1):
            best[w] = max(best[w], best[w - weight] + value)
    return best[capacity]
