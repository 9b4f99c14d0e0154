def merge_sorted_lists_05(a, b):
    """Merge two ascending linked lists (nodes linked through .successor) into one ascending list.

    The nodes are relinked, not copied; on equal values nodes of a come first.
    Return the head of the merged list (None if both are empty).
    """
    head = tail = None
    while a is not None and b is not None:
        if a.value <= b.value:
            nxt, a = a, a.successor
        else:
            nxt, b = b, b.successor
        if tail is None:
            head = nxt
        else:
            tail.successor = nxt
        tail = nxt
    rest = a if a is not None else b
    if tail is None:
        return rest
    tail.successor = rest
    return head
