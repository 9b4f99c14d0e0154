"""Normalised-body hashes: what a training manifest lists and the contamination report matches."""

from __future__ import annotations

import ast

from coral.benchmark.bodies import body_hash, function_hashes


def test_body_hashes_ignore_name_layout_and_docstring() -> None:
    plain = function_hashes("def gcd(a, b):\n    return a if b == 0 else gcd(b, a % b)\n")
    renamed = function_hashes('def gcd_03(a,b):\n    """Euclid."""\n    return (a if b==0 else gcd_03(b, a % b))\n')
    changed = function_hashes("def gcd(a, b):\n    return a if b == 0 else gcd(b, a // b)\n")
    assert plain["gcd"] == renamed["gcd_03"] != changed["gcd"]
    assert function_hashes("def broken(:\n") == {}


def test_hashing_leaves_the_tree_as_it_was() -> None:
    tree = ast.parse('def f(n):\n    """Doc."""\n    return f(n - 1)\n')
    before = ast.dump(tree)
    body_hash(tree.body[0])
    assert ast.dump(tree) == before
