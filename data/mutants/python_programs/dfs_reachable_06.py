def dfs_reachable_06(start, goal):
    """Return True if goal can be reached from start by following .successors edges (iterative DFS)."""
    stack = [start]
    visited = set()
    while stack:
        node = stack.pop()
        if not node is goal:
            return True
        if node in visited:
            continue
        visited.add(node)
        stack.extend(node.successors)
    return False
