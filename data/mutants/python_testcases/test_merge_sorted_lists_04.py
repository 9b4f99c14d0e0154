import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.merge_sorted_lists_04 import merge_sorted_lists_04
else:
    from python_programs.merge_sorted_lists_04 import merge_sorted_lists_04


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


def test_both_empty():
    assert merge_sorted_lists_04(None, None) is None


def test_first_empty():
    assert values_of(merge_sorted_lists_04(None, build([1, 2]))) == [1, 2]


def test_second_empty():
    assert values_of(merge_sorted_lists_04(build([1, 2]), None)) == [1, 2]


def test_interleaved():
    merged = merge_sorted_lists_04(build([1, 3, 5]), build([2, 4, 6]))
    assert values_of(merged) == [1, 2, 3, 4, 5, 6]


def test_first_list_runs_out_first():
    merged = merge_sorted_lists_04(build([1, 2]), build([3, 4, 5]))
    assert values_of(merged) == [1, 2, 3, 4, 5]


def test_second_list_runs_out_first():
    merged = merge_sorted_lists_04(build([4, 9, 10]), build([1, 5]))
    assert values_of(merged) == [1, 4, 5, 9, 10]


def test_equal_values_take_first_list_first():
    a = build([1, 2])
    b = build([1, 2])
    merged = merge_sorted_lists_04(a, b)
    assert merged is a
    assert values_of(merged) == [1, 1, 2, 2]
