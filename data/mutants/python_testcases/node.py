class Node:
    """A graph / linked-list node.

    Linked lists use .successor; graphs use .successors (and .predecessors), or
    .incoming_nodes / .outgoing_nodes for directed acyclic graphs.  The list arguments are
    copied, so nodes never share a default list.
    """

    def __init__(
        self,
        value=None,
        successor=None,
        successors=[],
        predecessors=[],
        incoming_nodes=[],
        outgoing_nodes=[],
    ):
        self.value = value
        self.successor = successor
        self.successors = list(successors)
        self.predecessors = list(predecessors)
        self.incoming_nodes = list(incoming_nodes)
        self.outgoing_nodes = list(outgoing_nodes)

    def __repr__(self):
        return f"Node({self.value!r})"
