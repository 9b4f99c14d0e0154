"""Recorded values on the trusted side: decoding what a box reported, and comparing it as the test would.

The harness in a box (coral/sandbox/harness.py) encodes the operands each assert recorded as
tagged JSON; `decode` turns them back into comparable values (anything malformed becomes `Bad`,
equal to nothing). `from_candidate` keeps only plain data from the candidate's box: a tolerance,
an exception class or a forged exception record decides nothing. `holds` applies the test's
operator with pytest's meaning of `pytest.approx`; every function here is total (any value,
any nesting: a bool or a reason, never an exception). docs/sandbox.md, "The runner".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class Bad:
    """A value the box could not record: equal to nothing."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


@dataclass(frozen=True)
class Obj:
    """The n-th support-class object a test made: == is identity for these."""

    n: int


@dataclass(frozen=True)
class Approx:
    expected: Any
    rel: float | None
    abs: float | None


@dataclass(frozen=True)
class ExcClass:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Raised:
    """What a `with pytest.raises` block raised: the exception type's MRO names and str()."""

    names: tuple[str, ...]
    message: str


class _Undecodable(Exception):
    pass


def decode(value: Any, depth: int = 0) -> Any:
    """Recorded JSON back into comparable values; anything malformed becomes Bad."""
    try:
        return _decode(value, depth)
    except (_Undecodable, TypeError, ValueError, RecursionError, OverflowError) as exc:
        return Bad(f"unreadable record: {exc}"[:120])


def _decode(v: Any, depth: int) -> Any:
    if depth > 200:
        raise _Undecodable("nested too deeply")
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [_decode(x, depth + 1) for x in v]
    if type(v) is not dict or len(v) < 1:
        raise _Undecodable("not a recorded value")
    if "$x" in v:
        return Bad(str(v["$x"])[:120])
    if "$t" in v:
        return tuple(_decode(x, depth + 1) for x in v["$t"])
    if "$s" in v:
        return {_decode(x, depth + 1) for x in v["$s"]}
    if "$f" in v:
        return frozenset(_decode(x, depth + 1) for x in v["$f"])
    if "$d" in v:
        return {_decode(k, depth + 1): _decode(x, depth + 1) for k, x in v["$d"]}
    if "$b" in v:
        return bytes.fromhex(v["$b"])
    if "$c" in v:
        return complex(*v["$c"])
    if "$o" in v and type(v["$o"]) is int:
        return Obj(v["$o"])
    if "$a" in v:
        rel, abs_ = v.get("rel"), v.get("abs")
        if not all(t is None or type(t) in (int, float) for t in (rel, abs_)):
            raise _Undecodable("bad approx tolerance")
        return Approx(_decode(v["$a"], depth + 1), rel, abs_)
    if "$e" in v:
        return ExcClass(tuple(str(n) for n in v["$e"]))
    if "$r" in v:
        return Raised(tuple(str(n) for n in v["$r"]), str(v.get("m", "")))
    raise _Undecodable("unknown tag")


def from_candidate(value: Any, outcome: bool = False) -> Any:
    """A value the candidate's box recorded, as the trusted side may use it: plain data only.

    A tolerance (pytest.approx), an exception class or a raised-exception record would let the
    candidate choose how it is judged; only the reference's box may produce them. The one
    exception is `outcome`: what a `with pytest.raises` block raised, which must be a Raised
    whose type names are a class Python could build (checked by `plausible_raised`) or None.
    """
    if outcome:
        if value is None or isinstance(value, Bad):
            return value
        if not isinstance(value, Raised):
            return Bad("the candidate's box recorded something other than an exception")
        why = implausible_raised(value)
        return value if why is None else Bad(why)
    found = _marker(value)
    return value if found is None else Bad(f"the candidate's box recorded {found}, which only the reference may")


def _marker(value: Any) -> str | None:
    """What in `value` is not plain data the candidate may produce (iteratively: any depth)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, Approx):
            return "a tolerance (pytest.approx)"
        if isinstance(v, ExcClass):
            return "an exception class"
        if isinstance(v, Raised):
            return "an exception record"
        if isinstance(v, list | tuple | set | frozenset):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return None


_MAX_MRO = 64


def implausible_raised(outcome: Raised) -> str | None:
    """Why the recorded type names of a raised exception cannot be a real class's MRO, or None.

    The names come from the candidate's box, so they are checked where they can be: the
    builtin exceptions they name must be exactly those of a class Python can build from them.
    A list naming every builtin exception (to match any pytest.raises) is rejected; a class
    the candidate really raised (a subclass of one or more builtins) passes.
    """
    names = outcome.names
    if not names or len(names) > _MAX_MRO or names[-1] != "builtins.object" or "builtins.BaseException" not in names:
        return "the candidate's box recorded an impossible exception type"
    claimed = [n for n in names if n.startswith("builtins.")]
    classes = [_builtin_exception(n) for n in claimed if n != "builtins.object"]
    if any(c is None for c in classes):
        return "the candidate's box recorded an impossible exception type"
    bases = [c for i, c in enumerate(classes) if c is not None and not any(
        issubclass(o, c) for o in classes[:i] if o is not None)]
    try:
        built = type("_Claimed", tuple(bases), {}) if bases else object
    except TypeError:
        return "the candidate's box recorded an impossible exception type"
    real = [f"builtins.{k.__qualname__}" for k in built.__mro__ if k.__module__ == "builtins"]
    return None if real == claimed else "the candidate's box recorded an impossible exception type"


def _builtin_exception(name: str) -> type | None:
    import builtins

    value = getattr(builtins, name.removeprefix("builtins."), None)
    return value if isinstance(value, type) and issubclass(value, BaseException) else None


def _is_bool(x: Any) -> bool:
    return type(x) is bool


def approx_equal(spec: Approx, actual: Any) -> bool:
    """pytest.approx's == (pytest 8/9): scalars, and flat sequences and mappings of them."""
    expected = spec.expected
    if isinstance(expected, dict):
        return isinstance(actual, dict) and set(actual) == set(expected) and all(
            approx_equal(Approx(expected[k], spec.rel, spec.abs), actual[k]) for k in expected)
    if isinstance(expected, list | tuple):
        if not isinstance(actual, list | tuple) or len(actual) != len(expected):
            return False
        return all(approx_equal(Approx(e, spec.rel, spec.abs), a) for e, a in zip(expected, actual, strict=True))
    if _is_bool(expected) and not _is_bool(actual):
        return False
    if type(actual) not in (bool, int, float, complex) and not isinstance(actual, Obj | str | type(None) | list
                                                                          | tuple | dict | set | frozenset | bytes):
        return False
    if actual == expected:
        return True
    numbers = (int, float, complex)  # bools included, as pytest's Complex check includes them
    if _is_bool(expected) or not (isinstance(expected, numbers) and isinstance(actual, numbers)):
        return False
    if math.isnan(abs(expected)) or math.isinf(abs(expected)):
        return False
    tolerance = spec.abs if spec.abs is not None else 1e-12
    if not (spec.rel is None and spec.abs is not None):
        rel = spec.rel if spec.rel is not None else 1e-6
        tolerance = max(rel * abs(expected), tolerance)
    return abs(expected - actual) <= tolerance


def equal(a: Any, b: Any) -> bool:
    if isinstance(a, Bad) or isinstance(b, Bad):
        return False
    if isinstance(b, Approx):
        return approx_equal(b, a)
    if isinstance(a, Approx):
        return approx_equal(a, b)
    try:
        return bool(a == b)
    except (RecursionError, OverflowError, MemoryError):
        return False


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, Obj) or isinstance(b, Obj):
        return a == b
    if a is None or b is None or _is_bool(a) or _is_bool(b):
        return a is b
    return type(a) is type(b) and type(a) in (int, str) and a == b  # small ints and interned strings


def holds(op: str, a: Any, b: Any) -> bool:
    """Whether `a op b` holds for decoded values, as Python (and pytest.approx) would say."""
    if isinstance(a, Bad) or isinstance(b, Bad):
        return False
    try:
        if op == "==":
            return equal(a, b)
        if op == "!=":
            return not equal(a, b)
        if op == "is":
            return _identical(a, b)
        if op == "is not":
            return not _identical(a, b)
        if op in ("in", "not in"):
            found = any(equal(a, x) for x in (b.keys() if isinstance(b, dict) else b)) if not isinstance(b, str) \
                else isinstance(a, str) and a in b
            return found if op == "in" else not found
        if isinstance(a, Approx | Obj) or isinstance(b, Approx | Obj):
            return False
        return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])
    except (TypeError, RecursionError, KeyError, OverflowError, ValueError, MemoryError):
        return False  # e.g. an int past float range against an approx: not equal, not a crash


def truthy(a: Any) -> bool:
    if isinstance(a, Bad | Approx | ExcClass | Raised):
        return False
    return True if isinstance(a, Obj) else bool(a)


def raised_as_expected(outcome: Any, expected: Any, match: Any) -> str | None:
    """None when the block raised what pytest.raises(expected, match=match) accepts, else why."""
    if not isinstance(expected, ExcClass):
        return "the reference's pytest.raises argument is not an exception class"
    if outcome is None:
        return f"DID NOT RAISE {expected.names[0]}"
    if isinstance(outcome, Bad):
        return outcome.reason
    if not isinstance(outcome, Raised) or not outcome.names:
        return "unreadable record"
    if expected.names[0] not in outcome.names:
        return f"raised {outcome.names[0][:60]}, not {expected.names[0]}"
    if isinstance(match, str):
        import re

        if not re.search(match, outcome.message):
            return f"pattern {match!r} not found"
    return None
