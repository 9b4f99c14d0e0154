import heapq


def shortest_path_lengths_03(source, weights):
    """Dijkstra: shortest distances from source in a directed graph with non-negative weights.

    weights maps (u, v) node pairs to the length of the edge u -> v. Return a dict mapping
    every node reachable from source (source included) to its distance from source.
    """
    adjacency = {}
    for (u, v), w in weights.items():
        adjacency.setdefault(u, []).append((v, w))
    dist = {source: 0}
    heap = [(0, 0, source)]
    counter = 1
    done = set()
    while heap:
        d, _, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        for nxt, w in adjacency.get(node, []):
            nd = d + w
            if nxt not in dist or nd < dist[nxt]:
                dist[nxt] = nd
                heapq.heappush(heap, (nd, counter, nxt))
                counter += 1
    return dist
