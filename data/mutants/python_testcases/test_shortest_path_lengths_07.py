import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.shortest_path_lengths_07 import shortest_path_lengths_07
else:
    from python_programs.shortest_path_lengths_07 import shortest_path_lengths_07


def solve(source, names, edges):
    nodes = {name: Node(name) for name in names}
    weights = {(nodes[a], nodes[b]): w for a, b, w in edges}
    result = shortest_path_lengths_07(nodes[source], weights)
    return {node.value: d for node, d in result.items()}


def test_single_node():
    assert solve("a", ["a"], []) == {"a": 0}


def test_chain():
    edges = [("a", "b", 2), ("b", "c", 3)]
    assert solve("a", ["a", "b", "c"], edges) == {"a": 0, "b": 2, "c": 5}


def test_unreachable_nodes_left_out():
    edges = [("a", "b", 1), ("c", "a", 1)]
    assert solve("a", ["a", "b", "c"], edges) == {"a": 0, "b": 1}


def test_indirect_route_shorter():
    edges = [("a", "b", 5), ("a", "c", 1), ("c", "b", 1)]
    assert solve("a", ["a", "b", "c"], edges) == {"a": 0, "b": 2, "c": 1}


def test_tree():
    edges = [("r", "x", 4), ("r", "y", 1), ("y", "z", 2), ("x", "w", 1)]
    assert solve("r", ["r", "x", "y", "z", "w"], edges) == {"r": 0, "x": 4, "y": 1, "z": 3, "w": 5}


def test_classic_graph():
    edges = [
        ("A", "B", 3), ("A", "C", 3), ("A", "F", 5), ("C", "B", 2), ("C", "D", 2),
        ("C", "E", 5), ("D", "B", 1), ("D", "E", 0), ("F", "E", 2), ("E", "F", 1),
    ]
    expected = {"A": 0, "B": 3, "C": 3, "D": 5, "E": 5, "F": 5}
    assert solve("A", ["A", "B", "C", "D", "E", "F"], edges) == expected


def test_longer_path_found_first():
    edges = [("s", "t", 10), ("s", "a", 1), ("a", "b", 1), ("b", "t", 1), ("t", "u", 1)]
    assert solve("s", ["s", "t", "a", "b", "u"], edges) == {"s": 0, "a": 1, "b": 2, "t": 3, "u": 4}
