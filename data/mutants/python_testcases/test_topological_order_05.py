import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.topological_order_05 import topological_order_05
else:
    from python_programs.topological_order_05 import topological_order_05


def graph(names, edges):
    nodes = {name: Node(name) for name in names}
    for a, b in edges:
        nodes[a].outgoing_nodes = nodes[a].outgoing_nodes + [nodes[b]]
        nodes[b].incoming_nodes = nodes[b].incoming_nodes + [nodes[a]]
    return [nodes[name] for name in names]


def check(names, edges):
    order = [node.value for node in topological_order_05(graph(names, edges))]
    assert sorted(order) == sorted(names)
    position = {name: i for i, name in enumerate(order)}
    for a, b in edges:
        assert position[a] < position[b]
    return order


def test_empty_graph():
    assert topological_order_05([]) == []


def test_no_edges_keeps_input_order():
    assert check(["a", "b", "c"], []) == ["a", "b", "c"]


def test_chain():
    assert check(["c", "b", "a"], [("a", "b"), ("b", "c")]) == ["a", "b", "c"]


def test_diamond():
    check(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])


def test_two_components():
    check(["x", "y", "p", "q", "r"], [("y", "x"), ("p", "q"), ("q", "r"), ("p", "r")])


def test_larger_dag():
    names = [1, 2, 3, 4, 5, 6, 7, 8]
    edges = [(5, 2), (5, 8), (7, 8), (7, 4), (3, 4), (8, 1), (8, 6), (4, 6), (2, 1)]
    check(names, edges)
