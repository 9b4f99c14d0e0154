"""Runs inside the sandbox: imports one candidate program and runs one problem's cases.

Nothing here decides a verdict or a cost. The harness only reports *values*: what the
candidate returned (JSON cases), or what a test compared (pytest-style tests, rewritten by
coral.sandbox.record so that each assert records its operands instead of checking them). The
trusted side compares them with expected values that never enter this box, and the kernel
counts the box's work outside it (coral.sandbox.box.Meter). Candidate code runs in this
process and can forge anything written here; a forged report is at worst a wrong output.

Input (stdin, read in full before any candidate code runs): a marshalled job. Output: one
line per report, ``NONCE JSON``, on a private duplicate of the original stdout; fds 0-2 are
pointed at /dev/null first, so candidate prints go nowhere.

    {"t": "collected", "ids": [ids]}            tests collected (or {"t": ..., "error": ...})
    {"t": "compiled", "ok": bool, "error": str}
    {"t": "imported", "ok": bool, "error": str}
    {"t": "case", "i": n, "out": value}          JSON case: the returned value, encoded
    {"t": "case", "i": n, "error": reason}       JSON case that raised
    {"t": "item", "i": n, "rec": [[site, [values]], ...], "end": "ok"|"skip"|"error", "error": str}
    {"t": "done"}

Before the candidate is imported, and before each case, the harness writes the case's label
to the meter's mark descriptor: the supervisor reads its counter there (coral/sandbox/supervisor.py).

Values are encoded as JSON with tags for what JSON lacks: {"$t": [..]} tuple, {"$s": [..]}
set, {"$f": [..]} frozenset, {"$d": [[k, v], ..]} dict (and dict subclasses whose == is
dict's, such as defaultdict), {"$b": hex} bytes, {"$c": [re, im]} complex, {"$o": n} the
n-th support-class object (node.Node) made in this test, {"$a": v, "rel": r, "abs": a}
pytest.approx, {"$e": [names]} an exception class, {"$x": reason} a value that cannot be
recorded (so it compares equal to nothing). Encoding never calls candidate code.

Only the standard library, and little of it: this starts once per candidate.
"""

import marshal
import os
import sys
import types

CANDIDATE_FILE = "<candidate>"
TEST_FILE = "<test>"
MARK_FD, ACK_FD = 3, 4  # coral.sandbox.supervisor.MARK_FD, ACK_FD
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


def _mark(label: int) -> None:
    rnd = sys.modules.get("random")
    if rnd is not None:
        rnd.seed(label)  # each case sees the same random stream however the run was split
    try:
        os.write(MARK_FD, b"%d\n" % label)
        os.read(ACK_FD, 1)  # counted: what follows belongs to this label
    except OSError:  # no meter (or the candidate closed it: its cost then merges)
        pass


def _json_encoder():
    """Compact ASCII JSON without importing json (its decoder pulls in re: ~20 ms a box)."""
    try:
        import _json

        enc = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
        enc([1, 1.5, "x", None, True, {"k": []}], 0)
        return lambda obj: "".join(enc(obj, 0))
    except Exception:
        import json

        return lambda obj: json.dumps(obj, separators=(",", ":"))


def _describe(exc: BaseException) -> str:
    """One line. The candidate's __str__ may run here: it costs the case, nothing more."""
    name = type(exc).__name__
    if type(exc) in (SyntaxError, IndentationError, TabError):  # made by the compiler
        return f"{name}: {exc.msg} (line {exc.lineno})"[:200]
    try:
        if all(type(a) in _SCALARS for a in exc.args):
            text = str(exc).strip().splitlines()
            if text:
                return f"{name}: {text[0]}"[:200]
    except BaseException:
        pass
    return name


def _message(exc: BaseException) -> str:
    """str(exc), what pytest.raises(match=...) searches; the candidate's __str__ may run."""
    try:
        text = str(exc)
        return text[:1000] if type(text) is str else ""
    except BaseException:
        return ""


# --- encoding values ------------------------------------------------------------------------


class _Reject(Exception):
    pass


class _Objects:
    """Support-class objects (node.Node) numbered in the order the test makes them, so that
    identity (what == means for them) is comparable across boxes."""

    classes: frozenset = frozenset()
    numbers: dict = {}  # id(obj) -> (n, obj): kept alive for the item

    @classmethod
    def reset(cls) -> None:
        cls.numbers = {}


def _numbering(cls_):
    init = cls_.__init__

    def __init__(self, *args, **kwargs):
        numbers = _Objects.numbers
        numbers.setdefault(id(self), (len(numbers), self))
        init(self, *args, **kwargs)

    return __init__


def _encode(value: object, room: list[int], depth: int = 0) -> object:
    kind = type(value)
    room[0] -= len(value) if kind is str else 1
    if room[0] < 0:
        raise _Reject("value too large")
    if kind in _SCALARS:
        return value
    if depth > _MAX_DEPTH:
        raise _Reject("value nested too deeply")
    if kind is list or (isinstance(value, list) and kind.__eq__ is list.__eq__):
        return [_encode(v, room, depth + 1) for v in list.__iter__(value)]
    if kind is tuple:
        return {"$t": [_encode(v, room, depth + 1) for v in value]}
    if isinstance(value, dict) and kind.__eq__ is dict.__eq__:  # defaultdict, OrderedDict's parent
        return {"$d": [[_encode(k, room, depth + 1), _encode(v, room, depth + 1)] for k, v in dict.items(value)]}
    if kind is set or kind is frozenset:
        return {"$s" if kind is set else "$f": [_encode(v, room, depth + 1) for v in value]}
    if kind is bytes:
        room[0] -= len(value)
        return {"$b": value.hex()}
    if kind is complex:
        return {"$c": [value.real, value.imag]}
    if kind in _Objects.classes:
        entry = _Objects.numbers.get(id(value))
        if entry is None or entry[1] is not value:
            raise _Reject(f"a {kind.__name__} the test did not make through its class")
        return {"$o": entry[0]}
    if kind is _Approx:
        return {"$a": _encode(value.expected, room, depth + 1), "rel": value.rel, "abs": value.abs}
    if isinstance(value, type) and issubclass(value, BaseException):
        return {"$e": _exception_names(value)}
    raise _Reject(f"a {kind.__name__}, not plain data")


def _exception_names(kind: type) -> list[str]:
    return [f"{k.__module__}.{k.__qualname__}" for k in kind.__mro__]


def _encoded(value: object, limit: int) -> object:
    try:
        return _encode(value, [limit])
    except _Reject as exc:
        return {"$x": str(exc)}
    except RecursionError:
        return {"$x": "value nested too deeply"}


# --- JSON cases -----------------------------------------------------------------------------


def _run_call(fn, job) -> None:
    """The reference's box for QuixBugs' usual JSON test: per case, the call the test makes and
    the test's expected operand, recorded as the test's assert would record them."""
    call, limit = job["call"], job["max_result_bytes"]
    names, shim = call["args"], sys.modules["pytest"]
    expected = compile(call["expected"], TEST_FILE, "eval", dont_inherit=True)
    for index, args, value in job["inputs"]:
        _mark(index)
        try:
            operands = [fn(*args), eval(expected, {"pytest": shim, names[0]: args, names[1]: value})]
        except _Skipped:
            _emit(t="item", i=index, rec=[], end="skip", error=None)
            continue
        except BaseException as exc:
            _emit(t="item", i=index, rec=[], end="error", error=_describe(exc))
            continue
        _emit(t="item", i=index, rec=[[call["site"], [_encoded(v, limit) for v in operands]]], end="ok", error=None)


def _call_ids(job) -> list[str]:
    """The ids the test's parametrize gives its cases (as _collect does)."""
    call, ids, seen = job["call"], [], set()
    for index, args, value in job["inputs"]:
        pid = "-".join(_param_id(v, n, index) for n, v in zip(call["args"], (args, value), strict=True))
        case_id = f"{call['test']}[{pid}]"
        while case_id in seen:
            case_id += "_"
        seen.add(case_id)
        ids.append(case_id)
    return ids


def _run_json(fn, job) -> None:
    limit = job["max_result_bytes"]
    for index, args in job["inputs"]:
        _mark(index)
        try:
            value = fn(*args)
            if type(value) is types.GeneratorType and job["lists"]:  # JSON cases compare its items
                value = list(value)
        except BaseException as exc:
            _emit(t="case", i=index, error=_describe(exc))
            continue
        out = _encoded(value, limit)
        try:
            text = _Out.encode(out)
        except (ValueError, RecursionError, MemoryError) as exc:  # e.g. a 5000-digit int
            text = _Out.encode({"$x": f"unencodable: {exc}"[:200]})
        if len(text) > limit:
            text = '{"$x":"value too large"}'
        _write(_Out.encode({"t": "case", "i": index})[:-1] + ',"out":' + text + "}")


# --- pytest-style problems -------------------------------------------------------------------
# The test file runs against a small in-box `pytest` stand-in (importing real pytest costs more
# than the rest of a box) that covers what QuixBugs-style files use. Its asserts have been
# rewritten into _coral_record(site, operands...) calls, its `with pytest.raises(E)` blocks
# into `with _coral_raises(site[, E, match])`.


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


class _Approx:
    """pytest.approx as data: the trusted side applies pytest's rule to what is recorded."""

    __hash__ = None

    def __init__(
        self, expected: object, rel: float | None = None, abs: float | None = None, nan_ok: bool = False
    ) -> None:
        self.expected, self.rel, self.abs = expected, rel, abs


class _NotRewritten:
    """pytest.raises outside a `with` the recorder rewrote: never reached in a recordable file."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise _Failed("pytest.raises is only supported as `with pytest.raises(...)`")


class _Raises:
    """`with pytest.raises(E)` rewritten: records what the block raised (the trusted side
    checks it against E, which only the reference's box evaluates) and swallows it, as
    pytest does when it matches; a mismatch fails the case there."""

    def __init__(self, item: list, site: int, *expected: object) -> None:
        self.item, self.site, self.expected = item, site, expected

    def __enter__(self) -> "_Raises":
        return self

    def __exit__(self, kind, value, tb) -> bool:
        if kind is not None and issubclass(kind, (_Skipped, _Failed)):
            return False
        outcome = None if kind is None else {"$r": _exception_names(kind), "m": _message(value)}
        values = [_encoded(v, 1 << 16) for v in self.expected] + [outcome]
        self.item.append([self.site, values])
        return True


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
        raises=_NotRewritten,
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
        # pytest applies decorators bottom-up, and ids follow the nearest decorator first.
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
    cache: dict = {}  # one value per fixture per test, as pytest

    def value_of(name: str, depth: int = 0) -> object:
        if name in cache:
            return cache[name]
        if name not in fixtures or depth > 20:
            raise _Failed(f"fixture {name!r} is not available in the sandbox")
        fix = fixtures[name]
        code = fix.__code__
        result = fix(**{a: value_of(a, depth + 1) for a in code.co_varnames[: code.co_argcount]})
        if type(result) is types.GeneratorType:
            teardown.append(result)
            result = next(result)
        cache[name] = result
        return result

    try:
        for name, fix in fixtures.items():
            if fix.__dict__["_coral_fixture"] is True:  # autouse
                value_of(name)
        code = func.__code__
        # As pytest: an argument with a default is no fixture (it keeps its default unless parametrized).
        required = code.co_argcount - len(func.__defaults__ or ())
        args = [a for i, a in enumerate(code.co_varnames[: code.co_argcount]) if i < required or a in params]
        func(**{a: params[a] if a in params else value_of(a) for a in args})
    finally:
        for gen in reversed(teardown):
            next(gen, None)


def _proxy(name: str, target: list):
    """What the test imports as the candidate function; target[0] is set after collection."""

    def call(*args, **kwargs):
        return target[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _run_pytest(job) -> None:
    name, target = job["name"], [None]
    sys.modules["pytest"] = _pytest_module()
    proxy_module = types.ModuleType(f"python_programs.{name}")
    setattr(proxy_module, name, _proxy(name, target))
    for package in ("python_programs", "correct_python_programs"):
        sys.modules[f"{package}.{name}"] = proxy_module
        setattr(sys.modules[package], name, proxy_module)
    test = types.ModuleType(f"test_{name}")
    test.__file__ = TEST_FILE
    sys.modules[test.__name__] = test
    item: list = []  # the records of the item being run
    limit = job["max_result_bytes"]

    def record(site: int, *values: object) -> None:
        item.append([site, [_encoded(v, limit) for v in values]])

    test.__dict__["_coral_record"] = record
    test.__dict__["_coral_raises"] = lambda site, *expected: _Raises(item, site, *expected)
    try:
        exec(compile(job["pytest_source"], TEST_FILE, "exec", dont_inherit=True), test.__dict__)
        cases = _collect(test)
    except BaseException as exc:
        _emit(t="collected", error=f"collecting tests failed: {_describe(exc)}")
        os._exit(0)
    _emit(t="collected", ids=[c[0] for c in cases])
    classes = set()
    for module in job["support_modules"]:
        for value in list(vars(sys.modules.get(module, types)).values()):
            if isinstance(value, type) and value.__module__ == module:
                value.__init__ = _numbering(value)
                classes.add(value)
    _Objects.classes = frozenset(classes)
    target[0] = _import_candidate(job)
    for index in job["items"] if job["items"] is not None else range(len(cases)):
        if index >= len(cases):
            break
        case_id, func, params = cases[index]
        _mark(index)
        _Objects.reset()
        del item[:]
        end, error = "ok", None
        try:
            _call_test(func, params, test)
        except _Skipped:
            end = "skip"
        except BaseException as exc:
            end, error = "error", _describe(exc)
        records = list(item)
        _Objects.reset()
        _emit(t="item", i=index, rec=records, end=end, error=error)


# --- entry point ----------------------------------------------------------------------------


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
    _mark(-1)  # the candidate's cost starts here: nothing of it has run yet
    try:
        code = compile(job["source"], CANDIDATE_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        _emit(t="compiled", ok=False, error=_describe(exc))
        os._exit(0)
    _emit(t="compiled", ok=True)
    name = job["name"]
    module = types.ModuleType(f"python_programs.{name}")
    module.__file__, module.__package__ = CANDIDATE_FILE, "python_programs"
    # Under its own name (dataclasses, enum and pickle look a class's module up there); in a
    # pytest-style run the test module already holds the proxy from that entry.
    sys.modules[module.__name__] = module
    for support in job["support_modules"]:  # `from .node import Node` finds the test's Node
        if support in sys.modules:
            sys.modules[f"python_programs.{support}"] = sys.modules[support]
    if "random" in job["source"]:
        import random  # imported here so that every case can be reseeded at its mark

        random.seed(0)
    try:
        exec(code, module.__dict__)
        fn = module.__dict__.get(name)
        error = None if callable(fn) else f"missing function {name}"
    except BaseException as exc:
        fn, error = None, f"import failed: {_describe(exc)}"
    if error is not None:
        _emit(t="imported", ok=False, error=error)
        os._exit(0)
    _emit(t="imported", ok=True)
    return fn


def main() -> None:
    job = _read_job()
    _isolate_stdio()
    _Out.nonce, _Out.encode = job["nonce"].encode("ascii"), _json_encoder()
    # Support files (node.py, load_testdata.py) sit in python_testcases/, as in QuixBugs.
    sys.path[:0] = [os.path.join(os.getcwd(), "python_testcases"), os.getcwd()]
    package = types.ModuleType("python_programs")
    package.__path__ = []  # nothing to find on disk
    sys.modules["python_programs"] = sys.modules["correct_python_programs"] = package
    if job["mode"] == "pytest":
        _run_pytest(job)
    elif job.get("call"):
        sys.modules["pytest"] = _pytest_module()
        _emit(t="collected", ids=_call_ids(job))
        _run_call(_import_candidate(job), job)
    else:
        _run_json(_import_candidate(job), job)
    _emit(t="done")
    os._exit(0)  # without waiting for threads the candidate left running


if __name__ == "__main__":
    main()
