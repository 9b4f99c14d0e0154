def powerset_02(items):
    """Return all subsets of the list items.

    Subsets keep the order of items. They are listed by building up from [[]]: for each item in
    turn, the existing subsets are followed by copies of them extended with that item.
    """
    subsets = [[]]
    for item in items:
        subsets = subsets + [subset + [item] for subset in subsets]
    return subsets
