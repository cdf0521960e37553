r"""Compiles a model-version search `filter` (a subset of AIP-160, https://google.aip.dev/160) into a
parametrised PostgreSQL condition for

    SELECT ... FROM model_versions v JOIN models m ON m.id = v.model_id WHERE <CompiledFilter.sql>

Three small stages: a tokenizer (text -> tokens with character offsets), a recursive-descent parser
(tokens -> AST dataclasses) and a compiler (AST -> SQL text + parameters). Every value the user wrote
travels as a psycopg `%s` parameter; the SQL text holds only columns and operators chosen here.

Grammar, loosest binding first (AIP-160's, without functions, member traversal on values or
free-text terms):

    filter     = [expression]
    expression = sequence {"AND" sequence}
    sequence   = factor {factor}              # terms side by side are ANDed
    factor     = term {"OR" term}
    term       = ["NOT" | "-"] simple
    simple     = comparison | "(" expression ")"
    comparison = field operator value         # operator: = != < <= > >= :

So OR binds TIGHTER than AND — the reverse of SQL: `a AND b OR c` means `a AND (b OR c)`, and so does
`a b OR c`. NOT takes one term: `NOT a OR b` means `(NOT a) OR b`. AND, OR and NOT are keywords only
in upper case. Values are "double" or 'single' quoted strings (escapes \\ \" \' \n \t \r), bare
words, numbers (7, -1, 0.5, 5e-5) and true/false; a bare word is taken as its text by string fields.

Fields:
    name, version, model_type   = != < <= > >=   exact / lexical (database collation); `:` is a
                                                   case-insensitive substring match
    description                 = != :
    tags                        = : (one of the version's or the model's tags), != (none of them)
    aliases (or alias)          = : (an alias of the model points at this version), != (none does)
    size_mb, parameter_count    = != < <= > >=   the value must be a number
    metrics.<n> (or performance_metrics.<n>)     = != < <= > >=, number; <n> is [A-Za-z0-9_]+
    metrics:<n>                 the version records metric <n>
    create_time                 = != < <= > >=   RFC 3339 timestamp, e.g. "2024-01-31T12:00:00Z"

A comparison on a metric the version lacks (or holds as a non-number) is false, and NOT of it is
true: `NOT metrics.accuracy > 0.9` keeps versions without an accuracy. `metrics.accuracy != 0.9`,
being a comparison itself, needs the metric to be there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from trainforge.core.errors import FieldViolation, InvalidArgument

MAX_FILTER_LENGTH = 2048
MAX_DEPTH = 32  # parentheses; the parser recurses once per level

SUPPORTED_FIELDS = ("name, version, model_type, description, tags, aliases (or alias), size_mb, "
                    "parameter_count, create_time, metrics.<name> (or performance_metrics.<name>), "
                    "metrics:<name>")


@dataclass(frozen=True)
class CompiledFilter:
    """A condition over `v` (model_versions) and `m` (models). `sql` holds psycopg `%s` placeholders
    only, one per item of `params`, and is parenthesised where it needs to be, so it can be ANDed
    with other conditions as it is."""

    sql: str
    params: tuple


# -- tokenizer ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # "word", "string", "op", "(", ")", "-", "AND", "OR", "NOT" or "end"
    text: str  # a string's contents, quotes removed and escapes decoded; otherwise the source text
    offset: int  # where the token starts in the filter
    end: int  # one past its last character: `-1` is a negative number only if "-" touches the "1"


_OPERATORS = ("<=", ">=", "!=", "=", "<", ">", ":")  # two-character operators first
_WORD_STOPS = frozenset("()\"'=!<>:")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}


def _error(description: str) -> InvalidArgument:
    return InvalidArgument.one("filter", description)


def _tokenize(text: str) -> list[Token]:
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL; reject it here rather than fail inside the query.
        raise _error(f"the filter contains a NUL character at offset {text.index(chr(0))}")
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(Token(ch, ch, i, i + 1))
            i += 1
        elif ch in "\"'":
            tokens.append(_read_string(text, i))
            i = tokens[-1].end
        elif op := next((o for o in _OPERATORS if text.startswith(o, i)), None):
            tokens.append(Token("op", op, i, i + len(op)))
            i += len(op)
        elif ch == "!":
            raise _error(f'"!" at offset {i} must be followed by "="; negate with NOT or "-"')
        elif ch == "-":
            # Only at the start of a token: inside a word (`llama-7b`, `5e-5`) it is part of the word.
            tokens.append(Token("-", ch, i, i + 1))
            i += 1
        else:
            # A word that starts with a digit may hold ":", so an unquoted RFC 3339 timestamp
            # (2024-01-31T12:00:00Z) stays one word; field names never start with a digit.
            stops = _WORD_STOPS - {":"} if ch.isdigit() else _WORD_STOPS
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in stops:
                i += 1
            word = text[start:i]
            tokens.append(Token(word if word in ("AND", "OR", "NOT") else "word", word, start, i))
    tokens.append(Token("end", "", len(text), len(text)))
    return tokens


def _read_string(text: str, start: int) -> Token:
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return Token("string", "".join(out), start, i + 1)
        if ch == "\\" and i + 1 < len(text):
            if text[i + 1] not in _ESCAPES:
                raise _error(f'unknown escape "\\{text[i + 1]}" at offset {i}; '
                             'use \\\\, \\", \\\', \\n, \\t or \\r')
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise _error(f"unterminated string starting at offset {start}")


# -- parser ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Value:
    text: str
    quoted: bool  # a quoted "5" is a string, never a number
    offset: int


@dataclass(frozen=True)
class Comparison:
    field: str  # as written, dots included: "metrics.accuracy"
    op: str
    value: Value
    offset: int  # of the field
    op_offset: int


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Comparison | Not | And | Or

_TERM_STARTS = ("word", "string", "(", "-", "NOT")


class _Parser:
    """One method per grammar rule in the module docstring."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> Node:
        node = self._expression(depth=0)
        tok = self._peek()
        if tok.kind == ")":
            raise _error(f'unbalanced parentheses: ")" at offset {tok.offset} has no "(" to close')
        if tok.kind != "end":
            raise _error(f"unexpected {self._describe(tok)} after a complete comparison")
        return node

    def _expression(self, depth: int) -> Node:
        parts = [self._sequence(depth)]
        while self._peek().kind == "AND":
            self._next()
            parts.append(self._sequence(depth))
        return _joined(And, parts)

    def _sequence(self, depth: int) -> Node:
        parts = [self._factor(depth)]
        while self._peek().kind in _TERM_STARTS:
            parts.append(self._factor(depth))
        return _joined(And, parts)

    def _factor(self, depth: int) -> Node:
        parts = [self._term(depth)]
        while self._peek().kind == "OR":
            self._next()
            parts.append(self._term(depth))
        return _joined(Or, parts)

    def _term(self, depth: int) -> Node:
        if self._peek().kind in ("NOT", "-"):
            self._next()
            return Not(self._simple(depth))
        return self._simple(depth)

    def _simple(self, depth: int) -> Node:
        tok = self._peek()
        if tok.kind == "(":
            if depth >= MAX_DEPTH:
                raise _error(f'parentheses nest deeper than {MAX_DEPTH} levels at offset {tok.offset}')
            self._next()
            inner = self._expression(depth + 1)
            close = self._next()
            if close.kind == "end":
                raise _error(f'unbalanced parentheses: "(" at offset {tok.offset} is never closed')
            if close.kind != ")":
                raise _error(f'expected ")" to close "(" at offset {tok.offset}, found {self._describe(close)}')
            return inner
        if tok.kind == "word":
            return self._comparison()
        if tok.kind == "string":
            raise _error(f"expected a field name at offset {tok.offset}, found the string "
                         f"{self._describe(tok)}; a value needs a field, as in name = \"llama\"")
        prev = self.tokens[self.pos - 1] if self.pos else None
        after = f' after "{prev.text}" at offset {prev.offset}' if prev else ""
        raise _error(f"expected a comparison{after}, found {self._describe(tok)}")

    def _comparison(self) -> Comparison:
        field = self._next()
        op = self._peek()
        if op.kind != "op":
            hint = ("; AND, OR and NOT are operators only in upper case"
                    if field.text.lower() in ("and", "or", "not") else "; free-text terms are not supported")
            raise _error(f'expected an operator (=, !=, <, <=, >, >= or :) after "{field.text}" at offset '
                         f"{field.offset}, found {self._describe(op)}{hint}")
        self._next()
        tok = self._next()
        if tok.kind in ("word", "string"):
            value = Value(tok.text, tok.kind == "string", tok.offset)
        elif tok.kind == "-" and self._peek().kind == "word" and self._peek().offset == tok.end:
            value = Value("-" + self._next().text, False, tok.offset)  # a negative number: -1, -5e-5
        else:
            raise _error(f'expected a value after "{op.text}" at offset {op.offset}, found {self._describe(tok)}')
        return Comparison(field.text, op.text, value, field.offset, op.offset)

    def _peek(self) -> Token:
        return self.tokens[self.pos]

    def _next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)  # "end" repeats forever
        return tok

    def _describe(self, tok: Token) -> str:
        if tok.kind == "end":
            return "end of filter"
        raw = self.text[tok.offset:tok.end]
        shown = raw if tok.kind == "string" else f'"{raw}"'  # a string brings its own quotes
        return f"{shown} at offset {tok.offset}"


def _joined(kind: type[And] | type[Or], parts: list[Node]) -> Node:
    # Flatten (a AND b) AND c into one list: same meaning, flatter SQL.
    flat: list[Node] = []
    for part in parts:
        flat.extend(part.operands if isinstance(part, kind) else [part])
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


# -- compiler -------------------------------------------------------------------------------------

_TEXT_COLUMNS = {"name": "m.name", "version": "v.version", "model_type": "v.model_type"}
_NUMBER_COLUMNS = {"size_mb": "v.size_mb", "parameter_count": "v.parameter_count"}
_METRIC_PREFIXES = ("metrics", "performance_metrics")
_COMPARE = ("=", "!=", "<", "<=", ">", ">=")
# The operators each kind of field takes; _kind() maps a field to its kind.
_OPERATORS_OF = {
    "text": _COMPARE + (":",),
    "description": ("=", "!=", ":"),
    "tags": ("=", "!=", ":"),
    "aliases": ("=", "!=", ":"),
    "number": _COMPARE,
    "create_time": _COMPARE,
    "metric": _COMPARE,  # metrics.<name>
    "metrics": (":",),  # metrics:<name>
}
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # float() alone would take "nan", "1_0"
_INTEGER_RE = re.compile(r"[+-]?\d+")
_METRIC_RE = re.compile(r"[A-Za-z0-9_]+")
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
# A metric as a number, or NULL when absent or not a JSON number: a bare ::double precision cast of
# a string metric would abort the whole query instead of not matching.
_METRIC = "(CASE WHEN jsonb_typeof(v.metrics -> %s) = 'number' THEN (v.metrics ->> %s)::double precision END)"
_ALIASED = "EXISTS (SELECT 1 FROM model_aliases a WHERE a.version_id = v.id AND a.alias = %s)"
_TAGGED = "%s = ANY(v.tags || m.tags)"

Fragment = tuple[str, tuple]


def _kind(field: str) -> str | None:
    if field in _TEXT_COLUMNS:
        return "text"
    if field in _NUMBER_COLUMNS:
        return "number"
    if field in ("aliases", "alias"):
        return "aliases"
    if field in ("description", "tags", "create_time"):
        return field
    prefix, dot, _ = field.partition(".")
    if prefix in _METRIC_PREFIXES:
        return "metric" if dot else "metrics"
    return None


class _Compiler:
    """Turns the AST into SQL. Problems with fields, operators and values are collected over the whole
    filter and raised together, so a client fixes them in one round."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def compile(self, node: Node) -> CompiledFilter:
        sql, params = self._node(node)
        if self.violations:
            raise InvalidArgument(self.violations)
        return CompiledFilter(sql, params)

    def _node(self, node: Node) -> Fragment:
        if isinstance(node, (And, Or)):
            parts = [self._node(n) for n in node.operands]
            joiner = " AND " if isinstance(node, And) else " OR "
            return "(" + joiner.join(s for s, _ in parts) + ")", tuple(p for _, ps in parts for p in ps)
        if isinstance(node, Not):
            sql, params = self._node(node.operand)
            # And/Or come parenthesised already; a leaf gets parentheses so NOT covers all of it.
            return (f"NOT {sql}" if isinstance(node.operand, (And, Or)) else f"NOT ({sql})"), params
        return self._comparison(node)

    def _comparison(self, c: Comparison) -> Fragment:
        kind, op, text = _kind(c.field), c.op, c.value.text
        if kind is None:
            return self._reject(f'unsupported field "{c.field}" at offset {c.offset}; supported: {SUPPORTED_FIELDS}')
        if op not in _OPERATORS_OF[kind]:
            return self._reject_operator(c, kind)
        if kind == "text":
            column = _TEXT_COLUMNS[c.field]
            return (f"{column} ILIKE %s", (_contains(text),)) if op == ":" else (f"{column} {op} %s", (text,))
        if kind == "description":
            return ("v.description ILIKE %s", (_contains(text),)) if op == ":" else (f"v.description {op} %s", (text,))
        if kind == "tags":
            return (f"NOT ({_TAGGED})" if op == "!=" else _TAGGED), (text,)
        if kind == "aliases":
            return (f"NOT {_ALIASED}" if op == "!=" else _ALIASED), (text,)
        if kind == "number":
            return f"{_NUMBER_COLUMNS[c.field]} {op} %s", (self._number(c),)
        if kind == "create_time":
            return f"v.create_time {op} %s", (self._timestamp(c),)
        if kind == "metrics":
            return "jsonb_exists(v.metrics, %s)", (self._metric_name(text, c.value.offset),)
        prefix, _, metric = c.field.partition(".")
        name = self._metric_name(metric, c.offset + len(prefix) + 1)
        # COALESCE makes a missing metric plain false, so NOT of the comparison is true.
        return f"COALESCE({_METRIC} {op} %s, false)", (name, name, self._number(c))

    def _reject_operator(self, c: Comparison, kind: str) -> Fragment:
        if kind == "metrics":
            return self._reject(f'"{c.field}" at offset {c.offset} needs a metric name: {c.field}.<name> {c.op} '
                                f"<number> to compare it, or {c.field}:<name> to test that it is there")
        hint = ""
        if kind == "metric" and c.op == ":":
            prefix, _, metric = c.field.partition(".")
            hint = f"; to test that the metric is there, write {prefix}:{metric}"
        return self._reject(f'operator "{c.op}" at offset {c.op_offset} is not supported for field "{c.field}"; '
                            f"use one of {', '.join(_OPERATORS_OF[kind])}{hint}")

    def _number(self, c: Comparison) -> int | float | None:
        text = c.value.text
        if c.value.quoted or not _NUMBER_RE.fullmatch(text):
            what = "the quoted string" if c.value.quoted else "the word"
            self._reject(f'field "{c.field}" at offset {c.offset} compares numbers, but {what} '
                         f'"{text}" at offset {c.value.offset} is not a number (write 7, -1, 0.5 or 5e-5, unquoted)')
            return None
        # An integer stays an int, so a bigint column compares exactly beyond 2**53.
        return int(text) if _INTEGER_RE.fullmatch(text) else float(text)

    def _timestamp(self, c: Comparison) -> datetime | None:
        text = c.value.text
        if _RFC3339_RE.fullmatch(text):
            try:
                return datetime.fromisoformat(text.upper())  # also checks month 13, Feb 30, hour 25
            except ValueError:
                pass
        self._reject(f'field "create_time" at offset {c.offset} needs an RFC 3339 timestamp with a time zone, '
                     f'such as "2024-01-31T12:00:00Z"; "{text}" at offset {c.value.offset} is not one')
        return None

    def _metric_name(self, name: str, offset: int) -> str:
        if not _METRIC_RE.fullmatch(name):
            self._reject(f'metric name "{name}" at offset {offset} must be letters, digits and _ only')
        return name

    def _reject(self, description: str) -> Fragment:
        self.violations.append(FieldViolation("filter", description))
        return "FALSE", ()


def _contains(text: str) -> str:
    # ILIKE pattern for "contains text": the user's \, % and _ match themselves. Backslash is LIKE's
    # default escape character, so no ESCAPE clause is needed.
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# -- entry point ----------------------------------------------------------------------------------

def compile_filter(text: str) -> CompiledFilter:
    """Compiles an AIP-160 filter (grammar and fields in the module docstring) into SQL over
    `model_versions v JOIN models m`. An empty or blank filter is `TRUE`. Raises InvalidArgument,
    field "filter", naming what is wrong and its character offset."""
    if len(text) > MAX_FILTER_LENGTH:
        raise _error(f"the filter is {len(text)} characters long; the limit is {MAX_FILTER_LENGTH}")
    if not text.strip():
        return CompiledFilter("TRUE", ())
    return _Compiler().compile(_Parser(text).parse())
