import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.minimum_spanning_tree_06 import minimum_spanning_tree_06
else:
    from python_programs.minimum_spanning_tree_06 import minimum_spanning_tree_06


def solve(edges):
    nodes = {}
    for a, b, _ in edges:
        nodes.setdefault(a, Node(a))
        nodes.setdefault(b, Node(b))
    weights = {(nodes[a], nodes[b]): w for a, b, w in edges}
    tree = minimum_spanning_tree_06(weights)
    return [(u.value, v.value) for u, v in tree]


def test_empty_graph():
    assert solve([]) == []


def test_single_edge():
    assert solve([("a", "b", 4)]) == [("a", "b")]


def test_triangle():
    assert solve([("a", "b", 1), ("b", "c", 2), ("a", "c", 3)]) == [("a", "b"), ("b", "c")]


def test_square_with_diagonal():
    edges = [("a", "b", 1), ("c", "d", 2), ("a", "c", 3), ("b", "d", 4), ("a", "d", 5)]
    assert solve(edges) == [("a", "b"), ("c", "d"), ("a", "c")]


def test_star():
    edges = [(1, 2, 3), (1, 3, 1), (1, 4, 2)]
    assert solve(edges) == [(1, 3), (1, 4), (1, 2)]


def test_two_components():
    edges = [("a", "b", 1), ("b", "c", 1), ("a", "c", 1), ("x", "y", 7), ("y", "z", 2), ("x", "z", 8)]
    assert solve(edges) == [("a", "b"), ("b", "c"), ("y", "z"), ("x", "y")]


def test_classic_graph():
    edges = [
        (1, 2, 10), (2, 3, 15), (3, 4, 10), (1, 4, 10),
        (3, 5, 4), (4, 5, 11), (2, 6, 7), (6, 7, 8), (5, 7, 9), (1, 7, 12),
    ]
    tree = solve(edges)
    total = sum(w for a, b, w in edges if (a, b) in tree)
    assert len(tree) == 6
    assert total == 48
