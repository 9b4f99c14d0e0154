def minimum_spanning_tree_03(weights):
    """Kruskal: return the edges of a minimum spanning forest of an undirected weighted graph.

    weights maps (u, v) node pairs to edge weights. Edges are considered in ascending weight
    (ties in input order) and returned, as their (u, v) keys, in the order they were chosen.
    """
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] is x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    tree = []
    for (u, v), w in sorted(weights.items(), key=lambda item: item[1]):
        ru, rv = find(u), find(v)
        if ru is not rv:
            parent[ru] = rv
            tree.append((u, v))
    return tree
