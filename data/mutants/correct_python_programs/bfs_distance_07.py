from collections import deque


def bfs_distance_07(start, goal):
    """Return the number of edges on a shortest path from start to goal, or -1 if unreachable.

    Edges are directed: a node's neighbours are in its .successors list.
    """
    queue = deque([(start, 0)])
    seen = {start}
    while queue:
        node, dist = queue.popleft()
        if node is goal:
            return dist
        for nxt in node.successors:
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, dist + 1))
    return -1
