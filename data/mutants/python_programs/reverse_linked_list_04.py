def reverse_linked_list_04(head):
    """Reverse a singly linked list (nodes linked through .successor) in place.

    Return the new head (None for an empty list).
    """
    prev = None
    node = head
    while node is not None:
        node.successor = prev
        prev = node
        node = nxt
    return prev
