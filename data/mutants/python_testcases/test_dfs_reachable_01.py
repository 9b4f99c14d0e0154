import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.dfs_reachable_01 import dfs_reachable_01
else:
    from python_programs.dfs_reachable_01 import dfs_reachable_01


def make(*names):
    return {name: Node(name) for name in names}


def test_start_is_goal():
    n = make("a")
    assert dfs_reachable_01(n["a"], n["a"]) is True


def test_chain_reachable():
    n = make("a", "b", "c")
    n["a"].successors = [n["b"]]
    n["b"].successors = [n["c"]]
    assert dfs_reachable_01(n["a"], n["c"]) is True


def test_edges_are_directed():
    n = make("a", "b", "c")
    n["a"].successors = [n["b"]]
    n["b"].successors = [n["c"]]
    assert dfs_reachable_01(n["c"], n["a"]) is False


def test_cycle_through_start_unreachable_goal():
    n = make("a", "b", "x")
    n["a"].successors = [n["b"]]
    n["b"].successors = [n["a"]]
    assert dfs_reachable_01(n["a"], n["x"]) is False


def test_cycle_away_from_start_unreachable_goal():
    n = make("s", "a", "b", "c", "x")
    n["s"].successors = [n["a"]]
    n["a"].successors = [n["b"]]
    n["b"].successors = [n["c"]]
    n["c"].successors = [n["a"]]
    assert dfs_reachable_01(n["s"], n["x"]) is False


def test_goal_behind_cycle():
    n = make("s", "a", "b", "g")
    n["s"].successors = [n["a"]]
    n["a"].successors = [n["g"], n["b"]]
    n["b"].successors = [n["a"]]
    assert dfs_reachable_01(n["s"], n["g"]) is True
