import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.bfs_distance_03 import bfs_distance_03
else:
    from python_programs.bfs_distance_03 import bfs_distance_03


def make(*names):
    return {name: Node(name) for name in names}


def test_start_is_goal():
    n = make("s")
    assert bfs_distance_03(n["s"], n["s"]) == 0


def test_chain():
    n = make("a", "b", "c", "d")
    n["a"].successors = [n["b"]]
    n["b"].successors = [n["c"]]
    n["c"].successors = [n["d"]]
    assert bfs_distance_03(n["a"], n["d"]) == 3


def test_unreachable():
    n = make("a", "b", "c")
    n["a"].successors = [n["b"]]
    n["c"].successors = [n["a"]]
    assert bfs_distance_03(n["a"], n["c"]) == -1


def test_shortcut_listed_first():
    n = make("s", "a", "b", "c", "g")
    n["s"].successors = [n["a"], n["b"]]
    n["a"].successors = [n["c"]]
    n["c"].successors = [n["g"]]
    n["b"].successors = [n["g"]]
    assert bfs_distance_03(n["s"], n["g"]) == 2


def test_shortcut_listed_last():
    n = make("s", "a", "b", "c", "g")
    n["s"].successors = [n["a"], n["b"]]
    n["b"].successors = [n["c"]]
    n["c"].successors = [n["g"]]
    n["a"].successors = [n["g"]]
    assert bfs_distance_03(n["s"], n["g"]) == 2


def test_cycle_with_direct_edge():
    n = make("a", "b", "c", "d")
    n["a"].successors = [n["d"], n["b"]]
    n["b"].successors = [n["c"]]
    n["c"].successors = [n["a"], n["d"]]
    assert bfs_distance_03(n["a"], n["d"]) == 1
