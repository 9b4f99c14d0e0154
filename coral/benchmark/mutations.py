"""Single-line bugs of the classes QuixBugs documents (Lin et al. 2017), found in one program.

Wrong comparison / arithmetic / boolean / assignment operator, off-by-one constant or bound, wrong
variable, swapped arguments, missing or negated condition, wrong slice bound, wrong return value,
missing `+ 1` or term, missing call, missing line. Mutations are found and checked with `ast` and
spliced into the source as text, so the rest of the program (docstring, comments, layout) is byte
for byte the original. `mutation_sites` walks the places a bug class applies once; `mutants`
lists every distinct single-line mutant; `rename` renames a program's function and its uses.
Used by `coral bench mutate` (coral.benchmark.mutate, which derives a benchmark of instances
from these) and by the tiny model's corpus (coral.model.corpus, which injects them).
"""

from __future__ import annotations

import ast
import copy
import io
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass

from coral.errors import BenchmarkError

BUG_CLASSES: tuple[str, ...] = (
    "comparison_operator", "arithmetic_operator", "boolean_operator", "assignment_operator",
    "off_by_one", "wrong_variable", "swapped_arguments", "missing_condition",
    "negated_condition", "slice_bound", "return_value", "missing_plus_one",
    "missing_arithmetic", "wrong_constant", "missing_call", "missing_line",
)  # fmt: skip

_CMP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.Gt), ast.LtE: (ast.Lt, ast.GtE), ast.Gt: (ast.GtE, ast.Lt),
    ast.GtE: (ast.Gt, ast.LtE), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,), ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
}  # fmt: skip
_ARITH_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub,), ast.Sub: (ast.Add,), ast.Mult: (ast.Add, ast.FloorDiv),
    ast.Div: (ast.FloorDiv, ast.Mult), ast.FloorDiv: (ast.Div, ast.Mod), ast.Mod: (ast.FloorDiv,),
    ast.Pow: (ast.Mult,), ast.LShift: (ast.RShift,), ast.RShift: (ast.LShift,),
    ast.BitAnd: (ast.BitOr,), ast.BitOr: (ast.BitAnd,), ast.BitXor: (ast.BitOr,),
}  # fmt: skip
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift)
# Calls whose argument alone is often still a plausible value: dropping them is a QuixBugs slip.
_UNWRAPPABLE = frozenset({"abs", "sorted", "reversed", "list", "int", "round", "len", "str", "set"})
_DELETABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Break, ast.Continue)


@dataclass(frozen=True)
class Mutant:
    """One candidate bug: the mutated source and where it changed."""

    bug_class: str
    line: int  # 1-based line of the reference that changed
    source: str


# ---------------------------------------------------------------------- finding mutations


@dataclass(frozen=True)
class Site:
    """One possible bug: `node` replaced by `new` (None: its line deleted)."""

    bug_class: str
    node: ast.expr | ast.stmt
    new: ast.AST | None


@dataclass(frozen=True)
class Parsed:
    """A program as mutations see it; `apply` writes one site's bug into its text."""

    tree: ast.Module
    lines: list[str]
    parents: dict[int, tuple[ast.AST, str, int | None]]

    def apply(self, site: Site) -> str | None:
        """The mutated text, or None when the site cannot be written as one line's change."""
        if site.new is None:
            return _delete_line(self.lines, site.node)
        return _splice(self.tree, self.lines, self.parents, site.node, site.new)


def mutation_sites(source: str) -> tuple[Parsed, list[Site]]:
    """Every place a bug class applies in the functions of `source`, in source-walk order
    (each function's expression and statement variants, then its deletable lines).
    `mutants` tries them all; the tiny model's corpus (coral.model.corpus) draws one."""
    tree = ast.parse(source)
    parsed = Parsed(tree, source.splitlines(keepends=True), _parents(tree))
    skip = _untouchable(tree)
    sites: list[Site] = []
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        local = _local_names(function)
        for node in ast.walk(function):
            # Only expressions and statements have positions a mutation can be written at.
            if id(node) not in skip and node is not function and isinstance(node, ast.expr | ast.stmt):
                sites += [Site(c, node, new) for c, new in _variants(node, parsed.parents, local)]
        for block in _blocks(function):
            if len(block) >= 2:
                sites += [Site("missing_line", stmt, None) for stmt in block if id(stmt) not in skip]
    return parsed, sites


def mutants(source: str) -> list[Mutant]:
    """Every single-line mutation of the functions in `source` that parses and changes the
    syntax tree, in source order, without duplicates."""
    parsed, sites = mutation_sites(source)
    seen = {ast.dump(parsed.tree)}
    found: list[Mutant] = []
    for site in sites:
        text = parsed.apply(site)
        if text is None:
            continue
        try:
            dump = ast.dump(ast.parse(text))
        except SyntaxError:
            continue
        if dump not in seen:
            seen.add(dump)
            found.append(Mutant(site.bug_class, site.node.lineno, text))
    return sorted(found, key=lambda m: (m.line, BUG_CLASSES.index(m.bug_class), m.source))


def _parents(tree: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    out: dict[int, tuple[ast.AST, str, int | None]] = {}
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        out[id(item)] = (parent, field, i)
            elif isinstance(value, ast.AST):
                out[id(value)] = (parent, field, None)
    return out


def _untouchable(tree: ast.AST) -> set[int]:
    """Docstrings and f-strings (whose inner positions Python 3.11 does not report exactly)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
            first.value.value, str
        ):
            skip.update(id(n) for n in ast.walk(first))
    return skip


def _local_names(function: ast.FunctionDef) -> list[str]:
    args = function.args
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return sorted(names)


def _blocks(function: ast.FunctionDef) -> Iterable[list[ast.stmt]]:
    for node in ast.walk(function):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _plus(node: ast.expr, op: ast.operator) -> ast.BinOp:
    return ast.BinOp(left=copy.deepcopy(node), op=op, right=ast.Constant(1))


def _variants(
    node: ast.AST, parents: dict[int, tuple[ast.AST, str, int | None]], local: list[str]
) -> list[tuple[str, ast.AST]]:
    """(bug class, replacement node) for each mutation of this node."""
    out: list[tuple[str, ast.AST]] = []
    parent = parents.get(id(node), (None, "", None))[0]
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for alt in _CMP_SWAPS.get(type(op), ()):
                new = copy.deepcopy(node)
                new.ops[i] = alt()
                out.append(("comparison_operator", new))
    elif isinstance(node, ast.BinOp):
        for alt in _ARITH_SWAPS.get(type(node.op), ()):
            out.append(("arithmetic_operator", ast.BinOp(node.left, alt(), node.right)))
        if isinstance(node.op, _NON_COMMUTATIVE):
            out.append(("swapped_arguments", ast.BinOp(node.right, node.op, node.left)))
        if isinstance(node.op, ast.Add | ast.Sub):
            one = isinstance(node.right, ast.Constant) and node.right.value == 1
            out.append(("missing_plus_one" if one else "missing_arithmetic", node.left))
    elif isinstance(node, ast.AugAssign):
        for alt in _ARITH_SWAPS.get(type(node.op), ()):
            out.append(("arithmetic_operator", ast.AugAssign(node.target, alt(), node.value)))
        out.append(("assignment_operator", ast.Assign([node.target], node.value, lineno=node.lineno)))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("boolean_operator", ast.BoolOp(other, node.values)))
        for i in range(len(node.values)):
            rest = node.values[:i] + node.values[i + 1 :]
            out.append(("missing_condition", rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("negated_condition", node.operand))
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        out.append(("wrong_constant", ast.Constant(not node.value)))
    elif isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
        kind = "slice_bound" if isinstance(parent, ast.Slice) else "off_by_one"
        out += [(kind, ast.Constant(node.value + 1))]
        if node.value > 0:
            out += [(kind, ast.Constant(node.value - 1))]
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in local:
        kind = "return_value" if isinstance(parent, ast.Return) else "wrong_variable"
        out += [(kind, ast.Name(other, ast.Load())) for other in local if other != node.id]
    elif isinstance(node, ast.Call):
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) == len(node.args):
            for i in range(len(node.args) - 1):
                args = list(node.args)
                args[i], args[i + 1] = args[i + 1], args[i]
                out.append(("swapped_arguments", ast.Call(node.func, args, node.keywords)))
        if isinstance(node.func, ast.Name):
            if node.func.id in _UNWRAPPABLE and len(node.args) == 1 and not node.keywords:
                out.append(("missing_call", node.args[0]))
            if node.func.id == "range" and 1 <= len(node.args) <= 3 and not node.keywords:
                for i, arg in enumerate(node.args[:2]):
                    if not isinstance(arg, ast.Constant):
                        for arith in (ast.Add(), ast.Sub()):
                            args = list(node.args)
                            args[i] = _plus(arg, arith)
                            out.append(("off_by_one", ast.Call(node.func, args, [])))
    elif isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            for field in ("lower", "upper"):
                bound = getattr(node.slice, field)
                if bound is None:
                    continue
                options: list[ast.expr | None] = [None]
                if not isinstance(bound, ast.Constant):
                    options += [_plus(bound, ast.Add()), _plus(bound, ast.Sub())]
                for option in options:
                    new_slice = copy.deepcopy(node.slice)
                    setattr(new_slice, field, option)
                    out.append(("slice_bound", ast.Subscript(node.value, new_slice, node.ctx)))
        elif not isinstance(node.slice, ast.Constant | ast.Tuple) and isinstance(node.ctx, ast.Load):
            for arith in (ast.Add(), ast.Sub()):
                out.append(("off_by_one", ast.Subscript(node.value, _plus(node.slice, arith), node.ctx)))
    elif isinstance(node, ast.Tuple) and isinstance(node.ctx, ast.Load) and isinstance(
        parent, ast.Assign | ast.Return
    ) and not any(isinstance(e, ast.Starred) for e in node.elts):
        for i in range(len(node.elts) - 1):
            elts = list(node.elts)
            elts[i], elts[i + 1] = elts[i + 1], elts[i]
            out.append(("swapped_arguments", ast.Tuple(elts, ast.Load())))
    elif isinstance(node, ast.If | ast.While) and not (
        isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)
    ):
        # Only the test changes: the replacement is the test node, spliced in place of it.
        out.append(("negated_condition", ast.UnaryOp(ast.Not(), node.test)))
    if isinstance(node, ast.Return) and node.value is not None and not (
        isinstance(node.value, ast.Constant) and node.value.value is None
    ):
        out.append(("return_value", ast.Return(ast.Constant(None))))
    return out


def _splice(
    tree: ast.Module,
    lines: list[str],
    parents: dict[int, tuple[ast.AST, str, int | None]],
    node: ast.expr | ast.stmt,
    new: ast.AST,
) -> str | None:
    """The source with `node` replaced by `new` on its one line, or None when that cannot be
    written on one line so that it parses to exactly the intended tree."""
    target = node.test if isinstance(node, ast.If | ast.While) else node
    lineno, end = getattr(target, "lineno", None), getattr(target, "end_lineno", None)
    if lineno is None or lineno != end:
        return None
    intended = _swapped_dump(tree, parents, target, new)
    raw = lines[lineno - 1].encode()
    head, tail = raw[: target.col_offset], raw[target.end_col_offset :]
    text = ast.unparse(new)
    if "\n" in text:
        return None
    options = [text, f"({text})"]
    if isinstance(new, ast.Tuple) and text.startswith("("):
        options.insert(0, text[1:-1])  # unparse brackets every tuple; the reference may not
    for candidate in options:
        line = (head + candidate.encode() + tail).decode()
        source = "".join(lines[: lineno - 1]) + line + "".join(lines[lineno:])
        try:
            if ast.dump(ast.parse(source)) == intended:
                return source
        except SyntaxError:
            continue
    return None


def _swapped_dump(
    tree: ast.Module, parents: dict[int, tuple[ast.AST, str, int | None]], node: ast.AST,
    new: ast.AST,
) -> str:
    """ast.dump of the tree with `node` replaced by `new` (the tree is restored afterwards)."""
    parent, field, index = parents[id(node)]
    if index is None:
        setattr(parent, field, new)
    else:
        getattr(parent, field)[index] = new
    try:
        return ast.dump(tree)
    finally:
        if index is None:
            setattr(parent, field, node)
        else:
            getattr(parent, field)[index] = node


def _delete_line(lines: list[str], stmt: ast.expr | ast.stmt) -> str | None:
    """The source without `stmt`, when the statement is alone on its line."""
    if not isinstance(stmt, _DELETABLE) or stmt.lineno != stmt.end_lineno:
        return None
    raw = lines[stmt.lineno - 1].encode()
    if raw[: stmt.col_offset].strip() or raw[stmt.end_col_offset :].strip():
        return None
    return "".join(lines[: stmt.lineno - 1]) + "".join(lines[stmt.lineno :])


# ---------------------------------------------------------------------- renaming


def rename(source: str, old: str, new: str) -> str:
    """`source` with every NAME token `old` replaced by `new` (strings and comments untouched)."""
    lines = source.splitlines(keepends=True)
    hits: dict[int, list[int]] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME and tok.string == old:
                hits.setdefault(tok.start[0], []).append(tok.start[1])
    except (tokenize.TokenError, SyntaxError) as exc:
        raise BenchmarkError(f"cannot rename {old} in a program that does not tokenize ({exc})") from None
    for row, cols in hits.items():
        line = lines[row - 1]
        for col in sorted(cols, reverse=True):
            line = line[:col] + new + line[col + len(old) :]
        lines[row - 1] = line
    return "".join(lines)
