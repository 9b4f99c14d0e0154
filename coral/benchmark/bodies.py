"""Normalised function bodies, for telling whether a model was trained on a benchmark program.

A model's training manifest (the tiny model writes one, docs/tiny_model.md) lists the hash of
every function it trained on; a benchmark problem is contaminated when the hash of its reference
or buggy function is in that list. The hash ignores layout, comments, the docstring and the
function's own name (a mutated instance `gcd_03` is still `gcd`), so reformatting or renaming
does not hide a match; any change to the code itself gives another hash.
"""

from __future__ import annotations

import ast
import hashlib

HASH_VERSION = "coral.benchmark.bodies v1"


def function_hashes(source: str) -> dict[str, str]:
    """Name -> normalised-body hash of every function defined in `source` (nested ones too);
    {} when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in out:
            out[node.name] = body_hash(node)
    return out


def body_hash(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """sha256 (first 32 hex digits) of the function's syntax tree, normalised as above. The
    tree is changed for the dump and restored (copying it would cost more than the dump)."""
    name, body = function.name, function.body
    renamed = [n for n in ast.walk(function) if isinstance(n, ast.Name) and n.id == name]
    has_doc = bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        and isinstance(body[0].value.value, str)  # fmt: skip
    try:
        function.name = "_"
        for node in renamed:
            node.id = "_"  # recursive calls follow the rename
        if has_doc:
            function.body = body[1:] or [ast.Pass()]
        dump = ast.dump(function, include_attributes=False)
    finally:
        function.name, function.body = name, body
        for node in renamed:
            node.id = name
    return hashlib.sha256(dump.encode()).hexdigest()[:32]
