"""Runs inside the sandbox: imports one candidate program and runs all of one problem's cases.

Input (stdin, written by coral.sandbox.runner, read in full before any candidate code runs): a
marshalled job. Output: one line per event, ``NONCE JSON``, on a private duplicate of the
original stdout; fds 0-2 are pointed at /dev/null first, so candidate prints go nowhere.

    {"t": "collected", "cases": [ids]}     pytest-style only (or {"t": ..., "error": ...})
    {"t": "compiled", "ok": bool, "error": str}
    {"t": "imported", "ok": bool, "error": str}
    {"t": "case", "i": n, "steps": s, "out": value}          JSON case: the parent compares
    {"t": "case", "i": n, "steps": s, "error": reason}       JSON case that failed in here
    {"t": "case", "i": n, "steps": s, "passed": bool, "reason": str}   pytest-style case
    {"t": "done"}

A case that runs past its step budget is reported with "stop": true and the harness exits at
once; the parent starts a new box at the next case (a trace-function exception could be caught
by the candidate, which would also switch tracing off, so exiting is the only sure stop).

Only the standard library, and little of it: this starts once per candidate.
"""

import _ast
import marshal
import os
import sys
import types

CANDIDATE_FILE = "<candidate>"
TEST_FILE = "<test>"
_PID = os.getpid()  # a candidate's forked children must never report
_MAX_DEPTH = 100
_SCALARS = (type(None), bool, int, float, str)


class _Out:
    fd = -1
    nonce = b""
    encode = None


def _emit(**msg: object) -> None:
    _write(_Out.encode(msg))


def _write(line: str) -> None:
    if os.getpid() != _PID:
        os._exit(0)
    data = _Out.nonce + b" " + line.encode("ascii") + b"\n"
    while data:
        data = data[os.write(_Out.fd, data) :]


def _json_encoder():
    """Compact ASCII JSON without importing json (its decoder pulls in re: ~20 ms a box)."""
    try:
        import _json

        enc = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
        enc([1, 1.5, "x", None, True, {"k": []}], 0)
        return lambda obj: "".join(enc(obj, 0))
    except Exception:  # any change in the private C API: use the public one
        import json

        return lambda obj: json.dumps(obj, separators=(",", ":"))


# --- step budget ----------------------------------------------------------------------------


class _Budget:
    steps = 0
    limit = 0
    case = -1  # index being run; -1 while importing


def _tracer(frame, event, arg):
    """Count lines of the candidate's code and of everything it calls (stdlib included), but
    not of the harness or the test file calling it: the count is the candidate's cost."""
    back = frame.f_back
    if frame.f_code.co_filename == CANDIDATE_FILE or (back is not None and back.f_trace is _line):
        return _line
    return None


def _line(frame, event, arg):
    if event == "line":
        _Budget.steps += 1
        if _Budget.steps > _Budget.limit:
            _over_budget()
    return _line


def _over_budget() -> None:
    sys.settrace(None)
    if _Budget.case < 0:
        _emit(t="imported", ok=False, error="step budget exceeded while importing")
    else:
        reason = "step budget exceeded"
        _emit(t="case", i=_Budget.case, steps=_Budget.limit, error=reason, stop=True)
    os._exit(0)


def _start(case: int, limit: int) -> None:
    _Budget.steps, _Budget.limit, _Budget.case = 0, limit, case
    rnd = sys.modules.get("random")
    if rnd is not None:
        rnd.seed(case)  # each case sees the same random stream however the run was split
    threading = sys.modules.get("threading")  # not imported by us: it costs ~10 ms a box
    if threading is not None:
        threading.settrace(_tracer)
    sys.settrace(_tracer)


def _stop() -> int:
    sys.settrace(None)
    threading = sys.modules.get("threading")
    if threading is not None:
        threading.settrace(None)
    return _Budget.steps


def _describe(exc: BaseException) -> str:
    """One line. Called while still traced: a hostile __str__ spends the case's budget."""
    name = type(exc).__name__
    if type(exc) in (SyntaxError, IndentationError, TabError):  # made by the compiler
        return f"{name}: {exc.msg} (line {exc.lineno})"[:200]
    if all(type(a) in _SCALARS for a in exc.args):
        text = str(exc).strip().splitlines()
        if text:
            return f"{name}: {text[0]}"[:200]
    return name


# --- JSON cases -----------------------------------------------------------------------------


class _Reject(BaseException):
    """A returned value we refuse to judge (a BaseException so that tests cannot catch it)."""


def _plain(value: object, room: list[int], depth: int = 0) -> object:
    """Exact builtin types only (subclasses and custom __eq__ objects fail); generators and
    tuples become lists. Generator bodies run here, so they are traced and budgeted. `room`
    counts down the result's size (elements + characters) so that a huge value fails early."""
    kind = type(value)
    room[0] -= len(value) if kind is str else 1
    if room[0] < 0:
        raise _Reject("returned value too large")
    if kind in _SCALARS:
        return value
    if depth > _MAX_DEPTH:
        raise _Reject("returned value nested too deeply")
    if kind is list or kind is tuple or kind is types.GeneratorType:
        return [_plain(v, room, depth + 1) for v in value]
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Reject(f"returned dict with a {type(k).__name__} key")
            out[k] = _plain(v, room, depth + 1)
        return out
    raise _Reject(f"returned a {kind.__name__}, not a plain value")


def _run_json(fn, inputs, job) -> None:
    for index, args in inputs:
        _start(index, job["step_budget"])
        try:
            value = _plain(fn(*args), [job["max_result_bytes"]])
        except _Reject as exc:
            steps = _stop()
            _emit(t="case", i=index, steps=steps, error=str(exc))
            continue
        except BaseException as exc:  # whatever the candidate raised
            reason = _describe(exc)
            steps = _stop()
            _emit(t="case", i=index, steps=steps, error=reason)
            continue
        steps = _stop()
        try:
            text = _Out.encode(value)
        except (ValueError, RecursionError, MemoryError) as exc:  # e.g. a 5000-digit int
            _emit(t="case", i=index, steps=steps, error=f"unencodable result: {exc}"[:200])
            continue
        if len(text) > job["max_result_bytes"]:
            _emit(t="case", i=index, steps=steps, error="returned value too large")
            continue
        head = _Out.encode({"t": "case", "i": index, "steps": steps})
        _write(head[:-1] + ',"out":' + text + "}")  # the value is encoded once


# --- pytest-style problems -------------------------------------------------------------------
# The test file runs against a small in-box `pytest` stand-in (importing real pytest costs more
# than the rest of a box) that covers what QuixBugs-style files use.


class _Skipped(BaseException):
    """pytest.skip(): a BaseException, as in pytest, so `except Exception` does not swallow it."""


class _Failed(BaseException):
    """pytest.fail()."""


class _Param:
    def __init__(self, *values: object, id: object = None, marks: object = ()) -> None:
        self.values, self.id = values, id
        self.marks = list(marks) if isinstance(marks, (list, tuple)) else [marks]


class _Mark:
    """pytest.mark.NAME: usable bare (@pytest.mark.slow) or called (@pytest.mark.skip(...))."""

    def __init__(self, name: str, args: tuple = (), kwargs: dict | None = None) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs or {}

    def __call__(self, *args: object, **kwargs: object) -> object:
        if len(args) == 1 and not kwargs and isinstance(args[0], types.FunctionType):
            args[0].__dict__.setdefault("pytestmark", []).append(self)
            return args[0]
        return _Mark(self.name, args, kwargs)


class _MarkFactory:
    def __getattr__(self, name: str) -> _Mark:
        return _Mark(name)


class _ExcInfo:
    type: object = None
    value: object = None


class _Raises:
    def __init__(self, expected: object, match: str | None) -> None:
        self.expected, self.match, self.info = expected, match, _ExcInfo()

    def __enter__(self) -> _ExcInfo:
        return self.info

    def __exit__(self, kind, value, tb) -> bool:
        if kind is None:
            raise AssertionError(f"DID NOT RAISE {self.expected}")
        if not issubclass(kind, self.expected):
            return False
        if self.match is not None:
            import re

            if not re.search(self.match, str(value)):
                raise AssertionError(f"pattern {self.match!r} not found")
        self.info.type, self.info.value = kind, value
        return True


def _raises(expected, *args, match=None, **kwargs):
    if not args:
        return _Raises(expected, match)
    with _Raises(expected, match) as info:
        args[0](*args[1:], **kwargs)
    return info


def _close(expected, actual, rel, abs_) -> bool:
    kinds = (int, float)
    if type(expected) in kinds and type(actual) in (*kinds, bool):
        tol = max(abs(expected) * (1e-6 if rel is None else rel), 1e-12 if abs_ is None else abs_)
        return actual == expected or abs(actual - expected) <= tol
    if type(expected) in (list, tuple) and type(actual) in (list, tuple):
        return len(expected) == len(actual) and all(
            _close(e, a, rel, abs_) for e, a in zip(expected, actual, strict=True)
        )
    if type(expected) is dict and type(actual) is dict:
        return expected.keys() == actual.keys() and all(_close(v, actual[k], rel, abs_) for k, v in expected.items())
    return bool(expected == actual)


class _Approx:
    __hash__ = None

    def __init__(self, expected: object, rel: float | None = None, abs: float | None = None) -> None:
        self.expected, self.rel, self.abs = expected, rel, abs

    def __eq__(self, other: object) -> bool:
        return _close(self.expected, other, self.rel, self.abs)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        return f"approx({self.expected!r})"


def _fixture(func=None, **options):
    if func is None:
        return lambda f: _fixture(f, **options)
    func.__dict__["_coral_fixture"] = bool(options.get("autouse")) or "plain"
    return func


def _skip(reason: str = "", **kwargs: object) -> None:
    raise _Skipped(reason)


def _fail(reason: str = "", **kwargs: object) -> None:
    raise _Failed(reason)


def _pytest_module() -> types.ModuleType:
    shim = types.ModuleType("pytest")
    shim.__dict__.update(
        use_correct=False,
        use_fixed=False,
        run_slow=False,
        mark=_MarkFactory(),
        param=_Param,
        raises=_raises,
        approx=_Approx,
        fixture=_fixture,
        skip=_skip,
        fail=_fail,
    )
    _skip.Exception = _Skipped
    return shim


def _param_id(value: object, argname: str, index: int) -> str:
    if type(value) in (int, float, bool, type(None)) or (
        type(value) is str and value.isascii() and value.isprintable()
    ):
        return str(value)
    return f"{argname}{index}"


def _skipped(marks: list) -> bool:
    for mark in marks:
        if mark.name == "skip" or (mark.name == "skipif" and mark.args and mark.args[0]):
            return True
    return False


def _collect(module: types.ModuleType) -> list:
    """(case id, test function, parameters) in file order, parametrize expanded."""
    cases: list = []
    seen: set[str] = set()
    for name, func in list(vars(module).items()):
        if not name.startswith("test") or type(func) is not types.FunctionType:
            continue
        marks = func.__dict__.get("pytestmark", [])
        if _skipped(marks):
            continue
        combos: list = [([], {})]
        for mark in marks:
            if mark.name == "parametrize":
                combos = [(ids + [pid], {**params, **more}) for ids, params in combos for pid, more in _expand(mark)]
        for ids, params in combos:
            case_id = f"{name}[{'-'.join(ids)}]" if ids else name
            while case_id in seen:
                case_id += "_"
            seen.add(case_id)
            cases.append((case_id, func, params))
    return cases


def _expand(mark: _Mark) -> list:
    argnames = mark.args[0] if mark.args else mark.kwargs["argnames"]
    values = mark.args[1] if len(mark.args) > 1 else mark.kwargs["argvalues"]
    names = [n.strip() for n in argnames.split(",")] if isinstance(argnames, str) else argnames
    explicit = mark.kwargs.get("ids")
    out = []
    for i, value in enumerate(values):
        param = value if isinstance(value, _Param) else None
        if param is not None and _skipped(param.marks):
            continue
        row = param.values if param is not None else (value,) if len(names) == 1 else value
        if param is not None and param.id is not None:
            pid = str(param.id)
        elif isinstance(explicit, (list, tuple)) and i < len(explicit):
            pid = str(explicit[i])
        else:
            pid = "-".join(_param_id(v, n, i) for n, v in zip(names, row, strict=True))
        out.append((pid, dict(zip(names, row, strict=True))))
    return out


def _call_test(func, params: dict, module: types.ModuleType) -> None:
    fixtures = {n: f for n, f in vars(module).items() if callable(f) and "_coral_fixture" in getattr(f, "__dict__", {})}
    teardown: list = []

    def value_of(name: str, depth: int = 0) -> object:
        if name not in fixtures or depth > 20:
            raise _Failed(f"fixture {name!r} is not available in the sandbox")
        fix = fixtures[name]
        code = fix.__code__
        result = fix(**{a: value_of(a, depth + 1) for a in code.co_varnames[: code.co_argcount]})
        if type(result) is types.GeneratorType:
            teardown.append(result)
            return next(result)
        return result

    try:
        for name, fix in fixtures.items():
            if fix.__dict__["_coral_fixture"] is True:  # autouse
                value_of(name)
        code = func.__code__
        args = code.co_varnames[: code.co_argcount]
        func(**{a: params[a] if a in params else value_of(a) for a in args})
    finally:
        for gen in reversed(teardown):
            next(gen, None)


class _Guard:
    """Whatever the candidate hands back to the test must be plain data or support-file
    objects (exact types, checked deeply), so an always-equal object cannot pass an assert."""

    rejected: str | None = None
    support: frozenset = frozenset()

    @classmethod
    def check(cls, value: object) -> None:
        plain = (*_SCALARS, complex, bytes)
        stack, seen = [value], set()
        while stack:
            item = stack.pop()
            kind = type(item)
            if kind in plain or id(item) in seen:
                continue
            seen.add(id(item))
            if len(seen) > 1_000_000:
                cls.fail("returned value too large")
            if kind in (list, tuple, set, frozenset):
                stack.extend(item)
            elif kind is dict:
                stack.extend(item.keys())
                stack.extend(item.values())
            elif kind in cls.support and type(getattr(item, "__dict__", None)) is dict:
                stack.extend(item.__dict__.values())
            else:
                cls.fail(f"returned a {kind.__name__}, not plain data")

    @classmethod
    def fail(cls, reason: str) -> None:
        cls.rejected = cls.rejected or reason  # kept even if the test catches the exception
        raise _Reject(reason)

    @classmethod
    def checked(cls, gen):
        for item in gen:
            cls.check(item)
            yield item


def _proxy(name: str, target: list):
    """What the test imports as the candidate function; target[0] is set after collection."""

    def call(*args, **kwargs):
        result = target[0](*args, **kwargs)
        if type(result) is types.GeneratorType:
            return _Guard.checked(result)
        _Guard.check(result)
        return result

    call.__name__ = call.__qualname__ = name
    return call


def _snapshot(namespace, watched=None) -> tuple:
    """Entries whose identity must not change, and whether new names are forbidden too."""
    items = list((watched if watched is not None else namespace).items())
    return namespace, items, watched is None


def _tampered(snapshots: list) -> bool:
    missing = object()
    for namespace, items, closed in snapshots:
        if closed and len(namespace) != len(items):  # e.g. Node.__eq__ added
            return True
        if any(namespace.get(k, missing) is not v for k, v in items):
            return True
    return False


def _run_pytest(job) -> None:
    name, target = job["name"], [None]
    sys.modules["pytest"] = shim = _pytest_module()
    proxy_module = types.ModuleType(f"python_programs.{name}")
    setattr(proxy_module, name, _proxy(name, target))
    for package in ("python_programs", "correct_python_programs"):
        sys.modules[f"{package}.{name}"] = proxy_module
        setattr(sys.modules[package], name, proxy_module)
    test = types.ModuleType(f"test_{name}")
    test.__file__ = TEST_FILE
    sys.modules[test.__name__] = test
    try:
        exec(compile(job["pytest_source"], TEST_FILE, "exec"), test.__dict__)
        cases = _collect(test)
    except BaseException as exc:  # a broken test file
        _emit(t="collected", error=f"collecting tests failed: {_describe(exc)}")
        os._exit(0)
    _emit(t="collected", cases=[c[0] for c in cases])
    support = [sys.modules[m] for m in job["support_modules"] if m in sys.modules]
    _Guard.support = frozenset(
        v for m in support for v in vars(m).values() if isinstance(v, type) and v.__module__ == m.__name__
    )
    import builtins

    # Before the candidate's import: what the tests rely on must still be there, unchanged.
    snapshot = [_snapshot(vars(builtins)), _snapshot(vars(shim))]
    snapshot += [_snapshot(vars(c)) for c in _Guard.support]
    snapshot.append(
        _snapshot(vars(test), {k: v for k, v in vars(test).items() if callable(v) or type(v) is types.ModuleType})
    )
    target[0] = _import_candidate(job)
    for index in range(job["start"], len(cases)):
        case_id, func, params = cases[index]
        _Guard.rejected = None
        _start(index, job["step_budget"])
        try:
            _call_test(func, params, test)
            passed, reason = True, None
        except _Skipped:
            passed, reason = False, "skipped at run time"
        except BaseException as exc:  # a failed assert, or the candidate's error
            passed, reason = False, _describe(exc)
        steps = _stop()
        if _Guard.rejected is not None:
            passed, reason = False, _Guard.rejected
        elif _tampered(snapshot):
            passed, reason = False, "the candidate modified the test environment"
        _emit(t="case", i=index, steps=steps, passed=passed, reason=reason)


# --- entry point ----------------------------------------------------------------------------


def _one_line_per_statement(tree: _ast.AST) -> _ast.AST:
    """Renumber lines so that every statement has its own.

    The step count is of line events, and CPython 3.11 emits none for a loop that never
    leaves its line (`while True: pass`); one statement per line also makes `a = 1; b = 2`
    cost two steps, as it should. Nothing reads these line numbers but the tracer.
    """
    line = 0
    stack: list[tuple[_ast.AST, int]] = [(tree, 0)]
    while stack:
        node, current = stack.pop()
        if isinstance(node, (_ast.stmt, _ast.excepthandler)):
            line += 1
            current = line
        if "lineno" in node._attributes:
            node.lineno = node.end_lineno = current
            node.col_offset, node.end_col_offset = 0, 1
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                stack.extend((v, current) for v in reversed(value) if isinstance(v, _ast.AST))
            elif isinstance(value, _ast.AST):
                stack.append((value, current))
    return tree


def _read_job() -> dict:
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    return marshal.loads(b"".join(chunks))  # from the parent, not from the candidate


def _isolate_stdio() -> None:
    _Out.fd = os.dup(1)  # non-inheritable: a program the candidate execs does not get it
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _import_candidate(job) -> object:
    """Compile and import; on failure report it and exit. Returns the candidate function."""
    try:
        tree = compile(job["source"], CANDIDATE_FILE, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
        code = compile(_one_line_per_statement(tree), CANDIDATE_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        _emit(t="compiled", ok=False, error=_describe(exc))
        os._exit(0)
    _emit(t="compiled", ok=True)
    name = job["name"]
    module = types.ModuleType(f"python_programs.{name}")
    module.__file__, module.__package__ = CANDIDATE_FILE, "python_programs"
    # Under its own name (dataclasses, enum and pickle look a class's module up there); in a
    # pytest-style run the test module already holds the checked wrapper from that entry.
    sys.modules[module.__name__] = module
    for support in job["support_modules"]:  # `from .node import Node` finds the test's Node
        if support in sys.modules:
            sys.modules[f"python_programs.{support}"] = sys.modules[support]
    if "random" in job["source"]:
        import random  # imported before tracing so that each case can reseed it

        random.seed(0)
    _start(-1, job["import_budget"])
    try:
        exec(code, module.__dict__)  # running the candidate is the point
        fn = module.__dict__.get(name)
        error = None if callable(fn) else f"missing function {name}"
    except BaseException as exc:  # whatever the candidate raised
        fn, error = None, f"import failed: {_describe(exc)}"
    _stop()
    if error is not None:
        _emit(t="imported", ok=False, error=error)
        os._exit(0)
    _emit(t="imported", ok=True)
    return fn


def main() -> None:
    job = _read_job()
    _isolate_stdio()
    _Out.nonce, _Out.encode = job["nonce"].encode("ascii"), _json_encoder()
    sys.path.insert(0, os.getcwd())  # support files (node.py) sit next to us
    package = types.ModuleType("python_programs")
    package.__path__ = []  #   # nothing to find on disk
    sys.modules["python_programs"] = sys.modules["correct_python_programs"] = package
    if job["mode"] == "pytest":
        _run_pytest(job)
    else:
        _run_json(_import_candidate(job), job["inputs"], job)
    _emit(t="done")
    os._exit(0)  # without waiting for threads the candidate left running


if __name__ == "__main__":
    main()
