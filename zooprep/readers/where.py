"""The ``--where`` filter language: Python-like comparisons, compiled safely.

A filter is parsed with Python's `ast` module and only a small set of nodes is
accepted::

    reliability > 0.5 and band == "r" and not pixelFlags_edge
    visit in (943296, 982985) or (snr >= 10 and diaObjectId is not None)
    0.2 <= reliability < 0.8

* a column name compared with a literal (``== != < <= > >=``; the literal may
  stand on either side; chained comparisons are split into ``and``);
* ``COLUMN in (...)`` / ``COLUMN not in [...]`` with a tuple or list of literals;
* ``COLUMN is None`` / ``COLUMN is not None`` (also ``== None`` / ``!= None``);
* a bare column name (true when the value is true, e.g. a flag);
* ``and``, ``or``, ``not`` and parentheses.

Literals are numbers, strings, ``True``, ``False`` and ``None``.  Calls,
attribute access, subscripts, arithmetic and column-to-column comparisons are
refused.  The parsed `Expr` is compiled to a SQLAlchemy expression with bound
parameters (`to_sqlalchemy`) for databases, and to a boolean pandas mask
(`to_mask`) for files and alerts, so no text of the filter ever reaches SQL.

Missing values follow one rule on every backend: **a comparison with a
missing value is false** (so ``not reliability > 0.5`` keeps rows whose
reliability is missing).  This makes SQLite, PostgreSQL and files agree.
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zooprep.errors import InputError

__all__ = [
    "And",
    "Compare",
    "Expr",
    "In",
    "IsNull",
    "Not",
    "Or",
    "Truthy",
    "check_columns",
    "combine",
    "parse_where",
    "sugar",
    "to_mask",
    "to_sqlalchemy",
    "unknown_column",
]

Literal = int | float | str | bool | None

_OPS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_PY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Compare:
    """``column <op> value`` (value not None)."""

    column: str
    op: str
    value: Literal


@dataclass(frozen=True)
class In:
    """``column in values`` (or ``not in`` when ``negate``)."""

    column: str
    values: tuple[Literal, ...]
    negate: bool = False


@dataclass(frozen=True)
class IsNull:
    """``column is None`` (or ``is not None`` when ``negate``)."""

    column: str
    negate: bool = False


@dataclass(frozen=True)
class Truthy:
    """A bare column name: true where the value is true."""

    column: str


@dataclass(frozen=True)
class And:
    """All of ``items``."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """Any of ``items``."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    """The negation of ``item``."""

    item: Expr


Expr = Compare | In | IsNull | Truthy | And | Or | Not


# -- parsing ------------------------------------------------------------------


def parse_where(text: str) -> Expr:
    """Parse a ``--where`` expression.

    Parameters
    ----------
    text : str
        The filter, e.g. ``'reliability > 0.5 and band == "r"'``.

    Returns
    -------
    Expr
        The parsed filter.

    Raises
    ------
    InputError
        When the text is not valid or uses anything but the accepted forms.

    Examples
    --------
    >>> parse_where("snr > 5 and not pixelFlags_edge")
    And(items=(Compare(column='snr', op='>', value=5), Not(item=Truthy(column='pixelFlags_edge'))))
    """
    if not text or not text.strip():
        raise InputError("--where: empty expression")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        hint = ""
        if "=" in text and "==" not in text and not any(c in text for c in "<>!"):
            hint = " (use == to compare)"
        raise InputError(
            f"--where {text!r}: not a valid expression at column {exc.offset}{hint}"
        ) from None
    return _convert(tree.body, text)


def _refuse(node: ast.AST, text: str, what: str) -> InputError:
    """An InputError naming the refused part of the expression."""
    try:
        part = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every node we meet
        part = type(node).__name__
    return InputError(
        f"--where {text!r}: {what} not allowed ({part!r}); use comparisons of a "
        "column with literals joined by and/or/not"
    )


def _literal(node: ast.AST, text: str) -> Literal:
    """The value of a literal node (numbers, strings, True/False/None, -number)."""
    if isinstance(node, ast.Constant) and isinstance(
        node.value, int | float | str | bool | type(None)
    ):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
        and not isinstance(node.operand.value, bool)
    ):
        value = node.operand.value
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name):
        raise _unquoted(node, text)
    raise _refuse(node, text, "only literals may be compared with a column;")


def _unquoted(node: ast.Name, text: str) -> InputError:
    """The answer to a text value written without quotes (``band == r``)."""
    return InputError(
        f"--where {text!r}: {node.id} is a name, not a value (only one side of a "
        f"comparison may be a column); if you mean the text {node.id}, quote it: "
        f"'{node.id}'"
    )


def _convert(node: ast.AST, text: str) -> Expr:
    """Turn an accepted AST node into an `Expr`."""
    if isinstance(node, ast.BoolOp):
        items = tuple(_convert(v, text) for v in node.values)
        return And(items) if isinstance(node.op, ast.And) else Or(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return Not(_convert(node.operand, text))
    if isinstance(node, ast.Name):
        return Truthy(node.id)
    if isinstance(node, ast.Compare):
        parts: list[Expr] = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(_comparison(left, op, right, text))
            left = right
        return parts[0] if len(parts) == 1 else And(tuple(parts))
    if isinstance(node, ast.Call):
        raise _refuse(node, text, "function calls are")
    if isinstance(node, ast.Attribute):
        raise _refuse(node, text, "attribute access is")
    if isinstance(node, ast.Subscript):
        raise _refuse(node, text, "subscripts are")
    if isinstance(node, ast.BinOp):
        raise _refuse(node, text, "arithmetic is")
    raise _refuse(node, text, f"{type(node).__name__} is")


def _comparison(left: ast.AST, op: ast.cmpop, right: ast.AST, text: str) -> Expr:
    """One ``a <op> b`` link of a comparison."""
    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(left, ast.Name):
            raise _refuse(left, text, "the left of 'in' must be a column;")
        if not isinstance(right, ast.Tuple | ast.List | ast.Set):
            raise _refuse(right, text, "'in' needs a list of literals;")
        values = tuple(_literal(e, text) for e in right.elts)
        if not values:
            raise InputError(f"--where {text!r}: 'in' needs at least one value")
        return In(left.id, values, negate=isinstance(op, ast.NotIn))
    if isinstance(op, ast.Is | ast.IsNot):
        if not isinstance(left, ast.Name) or _literal(right, text) is not None:
            raise _refuse(right, text, "'is' is only for 'COLUMN is None';")
        return IsNull(left.id, negate=isinstance(op, ast.IsNot))
    symbol = _OPS[type(op)]
    if isinstance(left, ast.Name) and isinstance(right, ast.Name):
        raise _unquoted(right, text)
    if isinstance(left, ast.Name):
        column, value = left.id, _literal(right, text)
    elif isinstance(right, ast.Name):
        column, value = right.id, _literal(left, text)
        symbol = _FLIP[symbol]
    else:
        raise _refuse(left, text, "a comparison without a column is")
    if value is None:
        if symbol not in ("==", "!="):
            raise InputError(f"--where {text!r}: None can only be tested with == or !=")
        return IsNull(column, negate=symbol == "!=")
    return Compare(column, symbol, value)


# -- building -----------------------------------------------------------------


def combine(*exprs: Expr | None) -> Expr | None:
    """``and`` of the given filters, ignoring None."""
    items = tuple(e for e in exprs if e is not None)
    if not items:
        return None
    return items[0] if len(items) == 1 else And(items)


def sugar(
    *,
    visit: Sequence[int] | None = None,
    detector: Sequence[int] | None = None,
    band: Sequence[str] | None = None,
    reliability_min: float | None = None,
    reliability_max: float | None = None,
) -> Expr | None:
    """The filter meant by ``--visit/--detector/--band/--reliability-min/-max``."""
    parts: list[Expr] = []
    if visit:
        parts.append(In("visit", tuple(int(v) for v in visit)))
    if detector:
        parts.append(In("detector", tuple(int(d) for d in detector)))
    if band:
        parts.append(In("band", tuple(str(b) for b in band)))
    if reliability_min is not None:
        parts.append(Compare("reliability", ">=", float(reliability_min)))
    if reliability_max is not None:
        parts.append(Compare("reliability", "<=", float(reliability_max)))
    return combine(*parts)


def columns_of(expr: Expr | None) -> list[str]:
    """Column names used by a filter, in order of first use."""
    out: list[str] = []

    def walk(e: Expr) -> None:
        if isinstance(e, And | Or):
            for item in e.items:
                walk(item)
        elif isinstance(e, Not):
            walk(e.item)
        elif e.column not in out:
            out.append(e.column)

    if expr is not None:
        walk(expr)
    return out


def unknown_column(name: str, available: Iterable[str], where: str) -> InputError:
    """An InputError for a column that does not exist, listing close matches."""
    names = list(available)
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    lower = {n.lower(): n for n in names}
    if name.lower() in lower and lower[name.lower()] not in close:
        close.insert(0, lower[name.lower()])
    hint = (
        f"; did you mean {', '.join(repr(c) for c in close)}?"
        if close
        else f"; {len(names)} columns available, e.g. "
        + ", ".join(repr(n) for n in names[:8])
    )
    return InputError(f"unknown column {name!r} in {where}{hint}")


def check_columns(expr: Expr | None, available: Iterable[str], where: str) -> None:
    """Raise InputError when the filter names a column that is not available."""
    names = list(available)
    known = set(names)
    for column in columns_of(expr):
        if column not in known:
            raise unknown_column(column, names, where)


# -- type checks ----------------------------------------------------------------


def _kind_of_value(value: Any) -> str:
    """'bool', 'number' or 'str' for a literal."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str"


def _check_kinds(expr: Expr | None, kinds: Mapping[str, str]) -> None:
    """Refuse comparisons of a column with a literal of another kind."""
    if expr is None:
        return
    if isinstance(expr, And | Or):
        for item in expr.items:
            _check_kinds(item, kinds)
        return
    if isinstance(expr, Not):
        _check_kinds(expr.item, kinds)
        return
    kind = kinds.get(expr.column, "other")
    if kind == "other":
        return
    values: tuple[Any, ...] = ()
    if isinstance(expr, Compare):
        values = (expr.value,)
        if kind == "bool" and expr.op not in ("==", "!="):
            raise InputError(
                f"--where: column {expr.column!r} is boolean; compare it with "
                "== True / == False or use it bare"
            )
    elif isinstance(expr, In):
        values = tuple(v for v in expr.values if v is not None)
    for value in values:
        vkind = _kind_of_value(value)
        if vkind != kind:
            raise InputError(
                f"--where: column {expr.column!r} holds {kind} values and cannot "
                f"be compared with {value!r}"
            )


# -- SQLAlchemy -------------------------------------------------------------------


def _sql_kind(column: Any) -> str:
    """Kind ('bool', 'number', 'str' or 'other') of a SQLAlchemy column."""
    try:
        py = column.type.python_type
    except NotImplementedError:
        return "other"
    if py is bool:
        return "bool"
    if issubclass(py, int | float) or py.__name__ == "Decimal":
        return "number"
    if py is str:
        return "str"
    return "other"


def to_sqlalchemy(expr: Expr, columns: Mapping[str, Any]) -> Any:
    """Compile a filter to a SQLAlchemy boolean expression with bound parameters.

    Parameters
    ----------
    expr : Expr
        The parsed filter.
    columns : mapping of str to Column
        The table's columns by name (``table.c``).

    Returns
    -------
    sqlalchemy.sql.ColumnElement
        A clause for ``select(...).where(...)``.

    Raises
    ------
    InputError
        For unknown columns (with close matches) or mismatched literal types.
    """
    import sqlalchemy as sa

    names = list(columns.keys())
    check_columns(expr, names, "--where")
    _check_kinds(expr, {name: _sql_kind(columns[name]) for name in names})

    def build(e: Expr) -> Any:
        if isinstance(e, And):
            return sa.and_(*(build(i) for i in e.items))
        if isinstance(e, Or):
            return sa.or_(*(build(i) for i in e.items))
        if isinstance(e, Not):
            return sa.not_(build(e.item))
        col = columns[e.column]
        if isinstance(e, IsNull):
            return col.is_not(None) if e.negate else col.is_(None)
        if isinstance(e, Truthy):
            test = col == sa.true() if _sql_kind(col) == "bool" else col != 0
            return sa.and_(col.is_not(None), test)
        if isinstance(e, In):
            values = [v for v in e.values if v is not None]
            has_null = len(values) != len(e.values)
            test = col.in_(values) if values else sa.false()
            if has_null:
                test = sa.or_(test, col.is_(None))
                return sa.not_(test) if e.negate else test
            test = sa.and_(col.is_not(None), test)
            return sa.not_(test) if e.negate else test
        return sa.and_(col.is_not(None), _PY_OPS[e.op](col, e.value))

    return build(expr)


# -- pandas -------------------------------------------------------------------------


def _frame_kind(series: Any) -> str:
    """Kind ('bool', 'number', 'str' or 'other') of a pandas column."""
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    values = series.dropna()
    if len(values) == 0:
        return "other"
    kinds = {_kind_of_value(v) for v in values if isinstance(v, int | float | str)}
    if len(kinds) == 1 and all(isinstance(v, int | float | str) for v in values):
        return kinds.pop()
    return "other"


def to_mask(expr: Expr, frame: Any) -> Any:
    """Evaluate a filter on a pandas DataFrame.

    Parameters
    ----------
    expr : Expr
        The parsed filter.
    frame : pandas.DataFrame
        The rows; column names as in the filter.

    Returns
    -------
    numpy.ndarray of bool
        True for the rows the filter keeps.

    Raises
    ------
    InputError
        For unknown columns (with close matches) or mismatched literal types.
    """
    import numpy as np
    import pandas as pd

    names = [str(c) for c in frame.columns]
    check_columns(expr, names, "--where")
    _check_kinds(expr, {name: _frame_kind(frame[name]) for name in columns_of(expr)})
    n = len(frame)

    def present(col: Any) -> Any:
        return np.asarray(pd.notna(col), dtype=bool)

    def compare(col: Any, op: str, value: Any) -> Any:
        ok = present(col)
        out = np.zeros(n, dtype=bool)
        if ok.any():
            values = col[ok]
            if isinstance(values.dtype, pd.api.extensions.ExtensionDtype):
                values = values.astype(object)
            try:
                result = _PY_OPS[op](values, value)
            except TypeError:
                raise InputError(
                    f"--where: column {col.name!r} cannot be compared with {value!r}"
                ) from None
            out[ok] = np.asarray(result, dtype=bool)
        return out

    def build(e: Expr) -> Any:
        if isinstance(e, And):
            return np.logical_and.reduce([build(i) for i in e.items])
        if isinstance(e, Or):
            return np.logical_or.reduce([build(i) for i in e.items])
        if isinstance(e, Not):
            return ~build(e.item)
        col = frame[e.column]
        if isinstance(e, IsNull):
            return present(col) if e.negate else ~present(col)
        if isinstance(e, Truthy):
            return (
                compare(col, "!=", 0)
                if _frame_kind(col) != "bool"
                else (compare(col, "==", True))
            )
        if isinstance(e, In):
            values = [v for v in e.values if v is not None]
            has_null = len(values) != len(e.values)
            ok = present(col)
            test = np.zeros(n, dtype=bool)
            if values and ok.any():
                test[ok] = np.asarray(col[ok].astype(object).isin(values), dtype=bool)
            if has_null:
                test |= ~ok
            return ~test if e.negate else test
        return compare(col, e.op, e.value)

    return np.asarray(build(expr), dtype=bool)
