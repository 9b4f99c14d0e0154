def reverse_linked_list_05(head):
    """Reverse a singly linked list (nodes linked through .successor) in place.

    Return the new head (None for an empty list).
    """
    prev = None
    node = head
    while node is not None:
        nxt = node.successor
        node.successor = prev
        prev = node
        node = nxt
    return prev
