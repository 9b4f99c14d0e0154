def flatten_02(nested):
    """Yield the non-list items of an arbitrarily nested list, left to right (a generator)."""
    for item in nested:
        if not isinstance(item, list):
            yield from flatten_02(item)
        else:
            yield item
