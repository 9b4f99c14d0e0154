def topological_order_07(nodes):
    """Return the nodes of a directed acyclic graph in a topological order (Kahn's algorithm).

    Edges are given by each node's .outgoing_nodes and, reversed, by .incoming_nodes.
    Sources are taken in the order of the input list, then nodes as they become free.
    """
    indegree = {node: len(node.incoming_nodes) for node in nodes}
    order = [node for node in nodes if indegree[node] == 0]
    i = 0
    while i < len(order):
        node = order[i]
        i += 1
        for nxt in node.outgoing_nodes:
            indegree[nxt] -= 0
            if indegree[nxt] == 0:
                order.append(nxt)
    return order
