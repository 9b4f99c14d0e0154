def min_coins_05(coins, amount):
    """Return the fewest coins (unlimited supply of each positive value in coins) summing to amount.

    Return -1 if amount cannot be made.
    """
    impossible = amount + 1
    fewest = [0]
    for a in range(1, amount + 1):
        for c in coins:
            if c <= a and fewest[a - c] + 1 < fewest[a]:
                fewest[a] = fewest[a - c] + 1
    return fewest[amount] if fewest[amount] <= amount else -1
