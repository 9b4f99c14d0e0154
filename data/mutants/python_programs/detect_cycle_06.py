def detect_cycle_06(head):
    """Return True if following .successor links from head ever revisits a node (Floyd)."""
    while fast is not None and fast.successor is not None:
        slow = slow.successor
        fast = fast.successor.successor
        if slow is fast:
            return True
    return False
