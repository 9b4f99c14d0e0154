import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.reverse_linked_list_09 import reverse_linked_list_09
else:
    from python_programs.reverse_linked_list_09 import reverse_linked_list_09


def build(values):
    head = None
    for value in reversed(values):
        head = Node(value, successor=head)
    return head


def values_of(head):
    out = []
    while head is not None:
        out.append(head.value)
        head = head.successor
    return out


def test_empty_list():
    assert reverse_linked_list_09(None) is None


def test_single_node():
    node = Node(1)
    result = reverse_linked_list_09(node)
    assert result is node
    assert values_of(result) == [1]


def test_two_nodes():
    assert values_of(reverse_linked_list_09(build([1, 2]))) == [2, 1]


def test_five_nodes():
    assert values_of(reverse_linked_list_09(build([1, 2, 3, 4, 5]))) == [5, 4, 3, 2, 1]


def test_new_head_is_old_tail():
    head = build(["a", "b", "c"])
    tail = head.successor.successor
    assert reverse_linked_list_09(head) is tail


def test_old_head_becomes_tail():
    head = build([7, 8, 9])
    reverse_linked_list_09(head)
    assert head.successor is None
