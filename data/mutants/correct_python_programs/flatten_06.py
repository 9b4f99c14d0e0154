def flatten_06(nested):
    """Yield the non-list items of an arbitrarily nested list, left to right (a generator)."""
    for item in nested:
        if isinstance(item, list):
            yield from flatten_06(item)
        else:
            yield item
