"""Pytest-style tests split so that the verdict is decided outside the candidate's box.

A test such as ``assert solve(g) == {"a": 0}`` holds its expected value in its source. The
candidate's box must never see it, so each assert is rewritten (here, on the trusted side)
into ``_coral_record(site, operands...)``:

- an operand that depends on the candidate (it calls the candidate function, directly or
  through the test's helpers, or reads a name bound from such a call or passed to one) is
  recorded in the candidate's box;
- an operand that does not (the expected value) is dropped from the candidate's copy of the
  test, together with the statements that only computed it, and is evaluated only in the
  reference's box, which runs the original test with the reference program;
- `with pytest.raises(E, match=...)` records what the block raised; E and match are
  evaluated in the reference's box only.

The trusted side then compares the candidate's recorded operand with the reference box's
recorded expected operand, with the test's own operator and pytest's meaning of
`pytest.approx`. Parametrize values of arguments that only feed dropped operands are blanked
(`None`) in the candidate's copy; JSON test data reaches the candidate's box with every
expected value blanked. Docstrings are dropped (QuixBugs writes expected outputs in them).

A test this cannot split (an assert in a helper, a chained comparison on the candidate's
value, ...) makes the problem unrecordable, with the reason: `coral bench check` reports it.
"""

from __future__ import annotations

import ast
import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CANDIDATE_PACKAGES = ("python_programs", "correct_python_programs")
# Calls an expected-value expression may make and still be dropped (no side effects).
_PURE_CALLS = frozenset({"approx", "set", "frozenset", "dict", "list", "tuple", "sorted", "len", "range",
                         "float", "int", "str", "bool", "abs", "min", "max", "sum", "reversed", "zip",
                         "enumerate", "map", "defaultdict", "OrderedDict"})
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


class Unrecordable(Exception):
    """The test file cannot be split; the message says where and why."""


@dataclass(frozen=True)
class Site:
    """One assert (or pytest.raises block) of the test file.

    kind: "cmp" (op between operands 0 and 1), "truth" (operand 0 is truthy, or falsy when
    negate), "raises". cand: which operands the candidate's box records (the reference's
    box records all of them).
    """

    line: int
    kind: str
    op: str = ""
    negate: bool = False
    cand: tuple[int, ...] = ()


@dataclass(frozen=True)
class Recording:
    candidate_source: str
    reference_source: str
    sites: dict[int, Site]
    # The site of QuixBugs' usual JSON test (one test, parametrized over load_json_testcases,
    # asserting `NAME(*input_data) OP expected`): the candidate's box then calls NAME on each
    # case's input directly, which is what the test does, without running the test file.
    call_site: int | None = None
    # With call_site: the test's name, its two argument names, and the assert's expected operand
    # when it reads only those and pytest.approx (the reference's box then evaluates it per
    # case without the test file); None otherwise.
    call_test: str = ""
    call_args: tuple[str, ...] = ()
    call_expected: str | None = None


_split_lock = threading.Lock()


@functools.lru_cache(maxsize=256)
def split_tests(source: str, name: str) -> Recording:
    """The two rewritten copies of a test file for candidate function `name` (once per
    process and file: Recording is immutable)."""
    # One at a time: in the evaluator, deep copies of two trees in two threads once failed with
    # "dictionary changed size during iteration"; copies are fresh parses now, and the lock stays.
    with _split_lock:
        return _split(source, name)


def _split(source: str, name: str) -> Recording:
    tree = ast.parse(source)
    candidate = _candidate_names(tree, name)
    if not candidate:
        raise Unrecordable(f"the test never imports {name} from python_programs")
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for statement in tree.body:
        if isinstance(statement, ast.ClassDef) and statement.name.startswith("Test"):
            raise Unrecordable(f"test classes are not supported ({statement.name}, line {statement.lineno})")
    calling = _calling_functions(functions, candidate)
    fixtures = {n for n, f in functions.items() if any(_is_fixture(d) for d in f.decorator_list)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and not _inside_function(node, tree):
            raise Unrecordable(f"an assert outside a function (line {node.lineno})")
    sites: dict[int, Site] = {}
    plans: dict[int, dict[str, Any]] = {}  # id(node) -> how to rewrite it
    helper_params: list[tuple[str, int, set[str]]] = []  # (helper, site, params its dropped operands read)
    expected_reads: list[_ExpectedReads] = []
    kept: set[str] = set()  # names the candidate's side may change or read the result through
    for func in functions.values():
        start = {p for p in _params(func) if p in fixtures and p in calling}
        tainted = _taint(func, candidate | calling, start, _imported(tree))
        returned = _taint(func, candidate | calling, start, _imported(tree), handed=False)
        kept |= tainted
        for node in ast.walk(func):
            if isinstance(node, ast.Assert):
                site = len(sites)
                sites[site], plans[id(node)] = _plan_assert(node, tainted, returned, candidate | calling, site)
                dropped = [e for i, e in enumerate(plans[id(node)]["operands"]) if i not in sites[site].cand]
                if node.msg is not None:
                    dropped.append(node.msg)  # the assert's message goes too (f"wanted {want}")
                expected_reads.append(_ExpectedReads(func.name, node.lineno, _reads(dropped, node.lineno)))
                if not func.name.startswith("test"):
                    read = {n.id for e in dropped for n in ast.walk(e) if isinstance(n, ast.Name)}
                    helper_params.append((func.name, site, read & set(_params(func))))
            elif isinstance(node, ast.With | ast.AsyncWith) and any(_is_raises(i.context_expr) for i in node.items):
                if len(node.items) != 1:
                    raise Unrecordable(f"pytest.raises combined with another context (line {node.lineno})")
                site = len(sites)
                sites[site] = Site(node.lineno, "raises")
                plans[id(node)] = {"site": site}
                raised = node.items[0].context_expr
                given = [*raised.args, *(k.value for k in raised.keywords)] if isinstance(raised, ast.Call) else []
                expected_reads.append(_ExpectedReads(func.name, node.lineno, _reads(given, node.lineno)))
            elif isinstance(node, ast.Lambda | ast.FunctionDef) and node is not func:
                if any(isinstance(n, ast.Assert) for n in ast.walk(node)):
                    raise Unrecordable(f"an assert inside a nested function (line {node.lineno})")
        for node in ast.walk(func):
            if _is_raises(node) and not _in_with_item(node, func):
                raise Unrecordable(f"pytest.raises outside a with statement (line {getattr(node, 'lineno', 0)})")
    reference = _Rewrite(plans, sites, candidate_side=False).visit(_copy_with_ids(tree, plans, source))
    cand_tree = _Rewrite(plans, sites, candidate_side=True).visit(_copy_with_ids(tree, plans, source))
    _drop_dead_code(cand_tree, candidate | calling)
    _drop_expected_only(cand_tree, expected_reads, candidate | calling | kept, fixtures)
    _check_helper_params(cand_tree, helper_params, sites)
    _blank_parametrize(cand_tree)
    blanked = _blank_tables(cand_tree, expected_reads)
    _check_nothing_expected_left(cand_tree, expected_reads, candidate | calling, blanked)
    _strip_docstrings(cand_tree)
    shape = _call_site(tree, candidate, sites, plans)
    call_site, test, args, expected = shape if shape is not None else (None, "", (), None)
    return Recording(ast.unparse(ast.fix_missing_locations(cand_tree)),
                     ast.unparse(ast.fix_missing_locations(reference)), sites, call_site, test, args, expected)


def _call_site(tree: ast.Module, candidate: set[str], sites: dict[int, Site],
               plans: dict[int, dict[str, Any]]) -> tuple[int, str, tuple[str, ...], str | None] | None:
    """The site of a test that only calls the candidate on each JSON input and compares."""
    tests = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            tests.append(node)
        elif isinstance(node, ast.If) and _only_imports(node.body) and _only_imports(node.orelse):
            continue
        elif not (_only_imports([node]) or (isinstance(node, ast.Assign) and _json_data(node.value, tree))):
            return None  # anything else at module level (helpers, fixtures, code) runs in the test
    if len(tests) != 1:
        return None
    func = tests[0]
    body = func.body[1:] if func.body and isinstance(func.body[0], ast.Expr) else func.body
    params = _params(func)
    if len(func.decorator_list) != 1 or len(params) != 2 or len(body) != 1 or not isinstance(body[0], ast.Assert):
        return None
    deco = func.decorator_list[0]
    if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "parametrize"
            and len(deco.args) == 2 and not deco.keywords and isinstance(deco.args[0], ast.Constant)
            and [n.strip() for n in str(deco.args[0].value).split(",")] == params
            and _json_data(deco.args[1], tree)):
        return None
    plan = plans.get(id(body[0]))
    if plan is None or "operands" not in plan:
        return None
    site = plan["site"]
    call = plan["operands"][0]
    if not (sites[site].kind == "cmp" and sites[site].cand == (0,) and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name) and call.func.id in candidate and not call.keywords
            and len(call.args) == 1 and isinstance(call.args[0], ast.Starred)
            and isinstance(call.args[0].value, ast.Name) and call.args[0].value.id == params[0]):
        return None
    expected = plan["operands"][1]
    names = {n.id for n in ast.walk(expected) if isinstance(n, ast.Name)}
    attributes = {n.attr for n in ast.walk(expected) if isinstance(n, ast.Attribute)}
    calls_ok = all(isinstance(c.func, ast.Attribute) and c.func.attr == "approx"
                   for c in ast.walk(expected) if isinstance(c, ast.Call))
    standalone = names <= {*params, "pytest"} and attributes <= {"approx"} and calls_ok
    return site, func.name, tuple(params), ast.unparse(expected) if standalone else None


def _only_imports(body: list[ast.stmt]) -> bool:
    return all(isinstance(n, ast.Import | ast.ImportFrom) for n in body)


# --- analysis -------------------------------------------------------------------------------


def _candidate_names(tree: ast.Module, name: str) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in {f"{p}.{name}" for p in CANDIDATE_PACKAGES} or node.module in CANDIDATE_PACKAGES:
                names |= {a.asname or a.name for a in node.names if a.name == name}
    return names


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _calling_functions(functions: Mapping[str, ast.AST], candidate: set[str]) -> set[str]:
    """Module functions that call the candidate, directly or through each other."""
    calling: set[str] = set()
    while True:
        more = {n for n, f in functions.items() if n not in calling and _mentions(f, candidate | calling)}
        if not more:
            return calling
        calling |= more


def _is_fixture(decorator: ast.AST) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
        isinstance(target, ast.Name) and target.id == "fixture")


def _is_raises(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "raises") or (isinstance(f, ast.Name) and f.id == "raises")


def _in_with_item(call: ast.AST, func: ast.AST) -> bool:
    return any(isinstance(w, ast.With | ast.AsyncWith) and any(i.context_expr is call for i in w.items)
               for w in ast.walk(func))


def _inside_function(node: ast.AST, tree: ast.Module) -> bool:
    for func in tree.body:
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) and any(n is node for n in ast.walk(func)):
            return True
    return False


def _check_helper_params(tree: ast.Module, helper_params: list[tuple[str, int, set[str]]],
                         sites: dict[int, Site]) -> None:
    """A helper's dropped expected operand may read its parameters only if the candidate's
    copy still reads them too (they are inputs); otherwise its callers pass expected values."""
    bodies = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    for helper, site, params in helper_params:
        func = bodies.get(helper)
        used = {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} \
            if func is not None else set()
        for param in sorted(params - used):
            raise Unrecordable(f"the expected value of the assert at line {sites[site].line} comes from "
                               f"{helper}'s parameter {param}, which its callers would pass into the box")


@dataclass(frozen=True)
class _ExpectedReads:
    """The names an assert's (or pytest.raises block's) expected side reads, in test function `func`."""

    func: str
    line: int
    names: frozenset[str]


# Calls and attributes that read names by string or out of frames: what such an expected operand
# reads cannot be kept out of the candidate's copy by name.
_DYNAMIC_NAMES = frozenset({"globals", "locals", "vars", "eval", "exec", "compile", "__import__"})
_DYNAMIC_ATTRS = frozenset({"_getframe", "f_locals", "f_globals", "__dict__", "__globals__", "__closure__", "modules",
                            "__defaults__", "__kwdefaults__", "currentframe", "stack", "import_module"})


def _reads(exprs: list[ast.expr], line: int) -> frozenset[str]:
    """The free names `exprs` read (not those bound inside them, as comprehension variables)."""
    loads: set[str] = set()
    bound: set[str] = set()
    for expr in exprs:
        for n in ast.walk(expr):
            if isinstance(n, ast.Name):
                (loads if isinstance(n.ctx, ast.Load) else bound).add(n.id)
                if n.id in _DYNAMIC_NAMES:
                    raise Unrecordable(f"the expected value of the assert at line {line} reads names "
                                       f"dynamically ({n.id}), so the candidate's copy cannot be kept free of it")
            elif isinstance(n, ast.Attribute) and n.attr in _DYNAMIC_ATTRS:
                raise Unrecordable(f"the expected value of the assert at line {line} reads names "
                                   f"dynamically (.{n.attr}), so the candidate's copy cannot be kept free of it")
            elif isinstance(n, ast.arg):
                bound.add(n.arg)
    return frozenset(loads - bound)


def _parametrized(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names: set[str] = set()
    for deco in func.decorator_list:
        if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "parametrize"
                and deco.args and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
            names |= {n.strip() for n in deco.args[0].value.split(",") if n.strip()}
    return names


def _fixture_references(tree: ast.Module) -> set[str]:
    """Names pytest may resolve as fixtures: every function's parameters, usefixtures strings,
    autouse fixtures."""
    refs: set[str] = set()
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            refs |= set(_params(func))
            for deco in func.decorator_list:
                if _is_fixture(deco) and isinstance(deco, ast.Call) and any(k.arg == "autouse" for k in deco.keywords):
                    refs.add(func.name)
                for c in ast.walk(deco):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        refs |= {x.strip() for x in c.value.split(",")}
    return refs


def _drop_expected_only(tree: ast.Module, reads: list[_ExpectedReads], keep: set[str], fixtures: set[str]) -> None:
    """Remove from the candidate's copy what only the dropped expected operands needed: the
    statements binding what they read (tables, helpers, closures, classes, fixtures, constants
    however computed), test parameters carrying them (fixtures, defaults), and statements that
    only show them (print, logging); transitively. Nothing that mentions the candidate goes."""
    expected = {n for r in reads for n in r.names}
    while True:
        loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        refs = _fixture_references(tree)
        removed = False
        for stmt in ast.walk(tree):  # what is computed from expected values only is expected too
            if isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign) and stmt.value is not None \
                    and _mentions(stmt.value, expected) and not _mentions(stmt, keep):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                if not bound <= expected:
                    expected |= bound
                    removed = True
        for func in tree.body:
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) and func.name.startswith("test"):
                columns = _parametrized(func)
                body_loads = {n.id for s in func.body for n in ast.walk(s)
                              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
                gone = {p for p in _params(func) if p in expected and p not in body_loads and p not in columns}
                if gone:
                    _remove_params(func.args, gone)
                    removed = True
        for parent in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                body = getattr(parent, field, None)
                if not isinstance(body, list):
                    continue
                keep_stmts = []
                for stmt in body:
                    if _expected_only(stmt, expected, loads, refs, keep):
                        expected |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
                        removed = True
                    else:
                        keep_stmts.append(stmt)
                if len(keep_stmts) != len(body):
                    setattr(parent, field, keep_stmts or [ast.Pass()])
        if not removed:
            return


def _remove_params(args: ast.arguments, gone: set[str]) -> None:
    """Drop parameters (and their defaults) by name."""
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = [(a, d) for a, d in zip(positional, defaults, strict=True) if a.arg not in gone]
    kept_defaults = [d for _, d in pairs if d is not None]
    args.posonlyargs = [a for a in args.posonlyargs if a.arg not in gone]
    args.args = [a for a in args.args if a.arg not in gone]
    args.defaults = kept_defaults
    kw = [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if a.arg not in gone]
    args.kwonlyargs = [a for a, _ in kw]
    args.kw_defaults = [d for _, d in kw]


def _expected_only(stmt: ast.stmt, expected: set[str], loads: set[str], refs: set[str], keep: set[str]) -> bool:
    if _mentions(stmt, keep):
        return False
    if isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        names = [n for t in targets for n in ast.walk(t)]
        return all(isinstance(n, ast.Name | ast.Tuple | ast.List | ast.Starred | ast.expr_context) for n in names) \
            and all(n.id in expected and n.id not in loads for n in names if isinstance(n, ast.Name))
    if isinstance(stmt, ast.Expr):
        return _mentions(stmt, expected) and not (isinstance(stmt.value, ast.Call)
                                                   and isinstance(stmt.value.func, ast.Name)
                                                   and stmt.value.func.id.startswith("_coral_"))
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return stmt.name in expected and stmt.name not in loads and stmt.name not in refs \
            and not stmt.name.startswith("test")
    return False


def _handed_whole(scope: ast.AST, name: str, sources: set[str]) -> bool:
    """Whether `scope` passes the whole value of `name` to the candidate (directly, or through the
    test file's helpers and the classes it defines or imports, which build its inputs): then that
    value is an input, which the candidate sees anyway. Builtins (print, str) and methods
    (log.info) do not count. A name the candidate's recorded operand reads whole (`shim(x) + y`) is
    the test's input to that operand too."""
    for call in ast.walk(scope):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_coral_record":
            parts = {id(n.value) for n in ast.walk(call) if isinstance(n, ast.Subscript | ast.Attribute)}
            if any(isinstance(n, ast.Name) and n.id == name and id(n) not in parts for n in ast.walk(call)):
                return True  # read whole, not a part picked out of a row (`c[0]`)
        if isinstance(call, ast.Call) and _mentions(call.func, sources):
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                inner = arg.value if isinstance(arg, ast.Starred) else arg
                if isinstance(inner, ast.Name) and inner.id == name:
                    return True
    return False


def _binding_line(scope: ast.AST, name: str, nested: bool) -> int | None:
    """The line of a statement in `scope` (its nested blocks too with `nested`) that binds `name`."""
    nodes = ast.walk(scope) if nested else iter(getattr(scope, "body", []))
    for node in nodes:
        if node is scope:
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return node.lineno
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor | ast.With
                      | ast.AsyncWith | ast.NamedExpr | ast.ExceptHandler):
            if isinstance(node, ast.ExceptHandler) and node.name == name:
                return node.lineno
            targets = [n for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
            if any(t.id == name for t in targets):
                return getattr(node, "lineno", 0)
    return None


def _blank_tables(tree: ast.Module, reads: list[_ExpectedReads]) -> set[tuple[str, str]]:
    """`for args, want in CASES:` over a literal table of rows, with `want` read only by expected
    operands: that column of the table becomes None in the candidate's copy (the loop still runs
    once per row). Returns the (test, loop variable) pairs blanked."""
    blanked: set[tuple[str, str]] = set()
    expected = {(r.func, n) for r in reads for n in r.names}
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        func_loads = {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for loop in ast.walk(func):
            if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
                    and isinstance(loop.iter, ast.Name)):
                continue
            table_name = loop.iter.id
            if sum(n.id == table_name for n in loads) != 1:
                continue  # the table is read elsewhere too: left whole, and the check decides
            columns = [i for i, t in enumerate(loop.target.elts) if isinstance(t, ast.Name)
                       and (func.name, t.id) in expected and t.id not in func_loads]
            table = _literal_table(func, tree, table_name, len(loop.target.elts))
            if not columns or table is None:
                continue
            for row in table:
                for i in columns:
                    row.elts[i] = ast.Constant(None)
            for i in columns:
                target = loop.target.elts[i]
                if isinstance(target, ast.Name):
                    blanked.add((func.name, target.id))
    return blanked


def _literal_table(func: ast.FunctionDef | ast.AsyncFunctionDef, tree: ast.Module, name: str,
                   width: int) -> list[ast.Tuple | ast.List] | None:
    """The rows of `name = [(..), ...]`, bound once (in `func`, or else at module level), each a
    literal of `width` elements without starred ones; None otherwise."""
    for scope, body in ((func, func.body), (tree, tree.body)):
        binds = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == name
                 and isinstance(n.ctx, ast.Store | ast.Del)]
        if scope is tree:  # module level: bindings inside functions are their own locals
            binds = [n for s in tree.body if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
                     for n in ast.walk(s) if isinstance(n, ast.Name) and n.id == name
                     and isinstance(n.ctx, ast.Store | ast.Del)]
        if not binds:
            continue
        statements = [s for s in body if isinstance(s, ast.Assign) and len(s.targets) == 1
                      and isinstance(s.targets[0], ast.Name) and s.targets[0].id == name]
        if len(binds) != 1 or len(statements) != 1 or not isinstance(statements[0].value, ast.List | ast.Tuple):
            return None
        rows = [r for r in statements[0].value.elts if isinstance(r, ast.Tuple | ast.List)]
        if len(rows) != len(statements[0].value.elts) or not all(
                len(r.elts) == width and not any(isinstance(e, ast.Starred) for e in r.elts) for r in rows):
            return None
        return rows
    return None


def _check_nothing_expected_left(tree: ast.Module, reads: list[_ExpectedReads], sources: set[str],
                                 blanked: set[tuple[str, str]]) -> None:
    """What an expected operand reads must be gone from the candidate's copy, blanked, or an input
    the copy hands whole to the candidate; otherwise the test cannot be split (a frame spy would
    read it: a loop over a table of inputs and answers, a fixture returning both, ...)."""
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    builders = sources | {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)} | {
        a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    json_columns: dict[str, set[str]] = {}
    for test in funcs.values():
        for deco in test.decorator_list:
            if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "parametrize" \
                    and len(deco.args) >= 2 and _json_data(deco.args[1], tree):
                json_columns.setdefault(test.name, set()).update(_parametrized(test))
    for r in reads:
        func = funcs.get(r.func)
        if func is None:
            continue
        body_loads = {n.id for s in func.body for n in ast.walk(s)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for name in sorted(r.names):
            where: str | None = None
            if (func.name, name) in blanked:
                continue
            if name in _params(func):
                if name in json_columns.get(func.name, set()) or (name in _parametrized(func)
                                                                     and name not in body_loads):
                    continue  # blanked, or JSON data that reaches the box without expected values
                where = f"{func.name}'s parameter {name}"
                scope: ast.AST = func
            elif (line := _binding_line(func, name, nested=True)) is not None:
                where, scope = f"{name} (bound at line {line})", func
            elif (line := _binding_line(tree, name, nested=False)) is not None:
                where, scope = f"{name} (bound at line {line})", tree
            if where is not None and not _handed_whole(scope, name, builders):
                raise Unrecordable(f"the expected value of the assert at line {r.line} reads {where}, which the "
                                   f"candidate's copy still holds beside its inputs")


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = func.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]


def _own_parts(stmt: ast.stmt) -> list[ast.AST]:
    """The expressions a statement itself evaluates (not its nested statements)."""
    if isinstance(stmt, ast.For | ast.AsyncFor):
        return [stmt.target, stmt.iter]
    if isinstance(stmt, ast.While | ast.If):
        return [stmt.test]
    if isinstance(stmt, ast.With | ast.AsyncWith):
        return list(stmt.items)
    if isinstance(stmt, ast.Try):
        return [h.type for h in stmt.handlers if h.type is not None]
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt]
    return [stmt]


def _imported(tree: ast.Module) -> set[str]:
    """Names of modules and classes the test imports (pytest, Node): calling their methods
    does not make them depend on the candidate."""
    return {(a.asname or a.name).split(".")[0] for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names}


def _stored(parts: list[ast.AST], sources: set[str], imported: set[str], handed: bool = True,
            flowing: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """Names a statement binds or may mutate: its targets, the objects whose methods it calls
    (without `handed`: only those it hands a value of `sources | flowing`), and (with `handed`)
    whatever it hands to a candidate-calling function and whatever it binds to an object that
    may be so handed (an alias, a node linked to another)."""
    out: set[str] = set()
    for part in parts:
        if handed and isinstance(part, ast.Assign | ast.AnnAssign | ast.AugAssign) and part.value is not None:
            # `alias = data` or `b = Node(2, a)`: whatever reaches the target reaches these too.
            out |= {b.id for b in ast.walk(part.value) if isinstance(b, ast.Name)} - imported - sources
        for n in ast.walk(part):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
                out.add(n.id)
            elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                out.add(n.name)
            elif isinstance(n, ast.alias):
                out.add((n.asname or n.name).split(".")[0])
            elif isinstance(n, ast.Attribute | ast.Subscript) and isinstance(n.ctx, ast.Store | ast.Del):
                out |= {b.id for b in ast.walk(n.value) if isinstance(b, ast.Name)}
            elif isinstance(n, ast.Call):
                # A method call may change its object: always when tracking what the candidate may
                # have touched; for what it returned, only when a candidate value goes in
                # (`out.append(f(x))`, not `WANT.get(1)`).
                if isinstance(n.func, ast.Attribute) and (handed or any(
                        _mentions(arg, sources | flowing) for arg in [*n.args, *(k.value for k in n.keywords)])):
                    out |= {b.id for b in ast.walk(n.func.value) if isinstance(b, ast.Name)} - imported
                if handed and _mentions(n.func, sources):
                    for arg in [*n.args, *(k.value for k in n.keywords)]:
                        out |= {b.id for b in ast.walk(arg) if isinstance(b, ast.Name)}
    return out


def _taint(func: ast.AST, sources: set[str], tainted: set[str], imported: set[str], handed: bool = True) -> set[str]:
    """Names of `func` whose values may depend on the candidate (flow-insensitive): with
    `handed`, also the objects the candidate may have changed (passed to it, or reachable
    from what was); without, only what it returned."""
    tainted = set(tainted)
    statements = [n for n in ast.walk(func) if isinstance(n, ast.stmt) and n is not func]
    while True:
        before = len(tainted)
        for stmt in statements:
            parts = _own_parts(stmt)
            if any(_mentions(p, sources | tainted) for p in parts):
                tainted |= _stored(parts, sources, imported, handed, tainted) - sources
        if len(tainted) == before:
            return tainted


def _plan_assert(node: ast.Assert, tainted: set[str], returned: set[str], sources: set[str],
                 site: int) -> tuple[Site, dict[str, Any]]:
    test = node.test
    dep = sources | tainted
    if any(isinstance(n, ast.NamedExpr) for n in ast.walk(test)):
        raise Unrecordable(f"an assignment expression (:=) in the assert at line {node.lineno}")
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right = test.left, test.comparators[0]
        # An operand that reads what the candidate returned is the candidate's; the other one is
        # the expected value even when it reads the inputs (`approx(expected, abs=input_data[-1])`,
        # `sorted(xs)`): the reference's box evaluates it on its own, untouched inputs. With no
        # returned value in the assert, it checks a side effect: what the candidate may have
        # changed is the candidate's.
        strong = tuple(i for i, e in enumerate((left, right)) if _mentions(e, sources | returned))
        cand = strong or tuple(i for i, e in enumerate((left, right)) if _mentions(e, dep))
        return Site(node.lineno, "cmp", _OPS[type(test.ops[0])], cand=cand), {
            "site": site, "operands": [left, right]}
    negate = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    inner = test.operand if isinstance(test, ast.UnaryOp) and negate else test
    if _mentions(inner, dep) and any(
        isinstance(n, ast.Compare | ast.BoolOp | ast.IfExp | ast.comprehension) for n in ast.walk(inner)
    ):
        raise Unrecordable(f"cannot separate the expected value in the assert at line {node.lineno}")
    cand = (0,) if _mentions(inner, dep) else ()
    return Site(node.lineno, "truth", negate=negate, cand=cand), {"site": site, "operands": [inner]}


# --- rewriting ------------------------------------------------------------------------------


def _copy_with_ids(tree: ast.Module, plans: dict[int, dict[str, Any]], source: str) -> ast.Module:
    """A fresh parse of the same source whose rewritten nodes get their plans (keyed by the new
    nodes' ids). Parsing again, not deep-copying: the two trees walk in the same order."""
    copied = ast.parse(source)
    twins = {id(a): b for a, b in zip(ast.walk(tree), ast.walk(copied), strict=True)}
    for key in list(plans):
        twin = twins.get(key)
        if twin is not None:
            plan = dict(plans[key])
            if "operands" in plan:
                plan["operands"] = [twins[id(e)] for e in plan["operands"]]
            plans[id(twin)] = plan
    return copied


class _Rewrite(ast.NodeTransformer):
    def __init__(self, plans: dict[int, dict[str, Any]], sites: dict[int, Site], candidate_side: bool) -> None:
        self.plans, self.sites, self.candidate_side = plans, sites, candidate_side

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        plan = self.plans.get(id(node))
        if plan is None:
            return node
        operands = plan["operands"]
        if self.candidate_side:
            operands = [operands[i] for i in self.sites[plan["site"]].cand]
            if not operands:
                return ast.copy_location(ast.Pass(), node)
        call = ast.Call(ast.Name("_coral_record", ast.Load()), [ast.Constant(plan["site"]), *operands], [])
        return ast.copy_location(ast.Expr(call), node)

    def visit_With(self, node: ast.With) -> ast.AST:
        self.generic_visit(node)
        plan = self.plans.get(id(node))
        if plan is None:
            return node
        call = node.items[0].context_expr
        args: list[ast.expr] = [ast.Constant(plan["site"])]
        if not self.candidate_side and isinstance(call, ast.Call):  # _is_raises: a call
            match = next((k.value for k in call.keywords if k.arg == "match"), ast.Constant(None))
            args += [call.args[0], match]
        node.items[0].context_expr = ast.Call(ast.Name("_coral_raises", ast.Load()), args, [])
        return node


def _drop_dead_code(tree: ast.Module, sources: set[str]) -> None:
    """Remove assignments whose names nothing reads any more and that call nothing impure."""
    while True:
        loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        removed = False
        for parent in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                body = getattr(parent, field, None)
                if not isinstance(body, list):
                    continue
                keep = [s for s in body if not _dead(s, loads)]
                if len(keep) != len(body):
                    removed = True
                    setattr(parent, field, keep or [ast.Pass()])
        if not removed:
            return


def _dead(stmt: ast.AST, loads: set[str]) -> bool:
    if not isinstance(stmt, ast.Assign | ast.AnnAssign) or stmt.value is None:
        return False
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    if not all(isinstance(t, ast.Name) and t.id not in loads for t in targets):
        return False
    for call in (n for n in ast.walk(stmt.value) if isinstance(n, ast.Call)):
        f = call.func
        fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if fname not in _PURE_CALLS:
            return False
    return True


def _blank_parametrize(tree: ast.Module) -> None:
    """Parametrize columns that the candidate's copy of a test no longer reads become None."""
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        used = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)}
        for deco in func.decorator_list:
            if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "parametrize" and deco.args):
                continue
            deco.keywords = [k for k in deco.keywords if k.arg != "ids"]  # ids may spell expected values
            names_node = deco.args[0]
            if not (isinstance(names_node, ast.Constant) and isinstance(names_node.value, str)):
                raise Unrecordable(f"parametrize argnames of {func.name} are not a string literal")
            names = [n.strip() for n in names_node.value.split(",") if n.strip()]
            blank = [i for i, n in enumerate(names) if n not in used]
            if not blank or len(deco.args) < 2:
                continue
            values = deco.args[1]
            if not isinstance(values, ast.List | ast.Tuple):
                if _json_data(values, tree):
                    continue  # the box's JSON file carries no expected values
                raise Unrecordable(f"parametrize values of {func.name} come from an expression the "
                                   f"recorder cannot split (line {deco.lineno})")
            for row in values.elts:
                _blank_row(row, blank, len(names), func.name)


def _json_data(node: ast.AST, tree: ast.Module) -> bool:
    """Whether `node` is load_json_testcases(...) or a module name bound to it."""
    if isinstance(node, ast.Call):
        f = node.func
        return (isinstance(f, ast.Name) and f.id == "load_json_testcases") or (
            isinstance(f, ast.Attribute) and f.attr == "load_json_testcases")
    if isinstance(node, ast.Name):
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in stmt.targets):
                return _json_data(stmt.value, tree)
    return False


def _blank_row(row: ast.AST, blank: list[int], width: int, func: str) -> None:
    if isinstance(row, ast.Call) and isinstance(row.func, ast.Attribute) and row.func.attr == "param":
        row.keywords = [k for k in row.keywords if k.arg != "id"]
        elts = row.args
    elif width == 1:
        elts = None
    elif isinstance(row, ast.Tuple | ast.List):
        elts = row.elts
    else:
        raise Unrecordable(f"a parametrize row of {func} is not a literal tuple (line {getattr(row, 'lineno', 0)})")
    if elts is None:
        raise Unrecordable(f"the only parametrize argument of {func} is never used by the test")
    for i in blank:
        if i < len(elts):
            elts[i] = ast.Constant(None)


def _strip_docstrings(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
