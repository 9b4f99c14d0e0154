import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.detect_cycle_01 import detect_cycle_01
else:
    from python_programs.detect_cycle_01 import detect_cycle_01


def chain(n):
    nodes = [Node(i) for i in range(n)]
    for a, b in zip(nodes, nodes[1:]):
        a.successor = b
    return nodes


def test_empty_list():
    assert detect_cycle_01(None) is False


def test_single_node_no_cycle():
    assert detect_cycle_01(Node(0)) is False


def test_single_node_self_loop():
    node = Node(0)
    node.successor = node
    assert detect_cycle_01(node) is True


def test_two_nodes_no_cycle():
    nodes = chain(2)
    assert detect_cycle_01(nodes[0]) is False


def test_long_list_no_cycle():
    nodes = chain(7)
    assert detect_cycle_01(nodes[0]) is False


def test_cycle_back_to_head():
    nodes = chain(4)
    nodes[-1].successor = nodes[0]
    assert detect_cycle_01(nodes[0]) is True


def test_cycle_in_tail():
    nodes = chain(6)
    nodes[-1].successor = nodes[3]
    assert detect_cycle_01(nodes[0]) is True
