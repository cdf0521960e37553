"""The part of Go's text/template that Ollama chat templates use, for the Ollama stand-in.

Ollama renders a model's TEMPLATE with Go's text/template over `.System`, `.Prompt`, `.Response`,
`.Messages` (each with `.Role`, `.Content`) and `.Tools`. This module parses and executes the subset
that ChatML-style templates are written in: text, `{{ pipeline }}` with `{{-`/`-}}` trimming,
comments, fields (`.Messages`, `$.System`, `$m.Role`), string/number literals, parenthesised calls of
`eq ne not and or len slice index`, variables (`$x := ...`), `if / else if / else / end` and
`range [$i,] [$v :=] ... [else] end`. Anything else raises TemplateError at parse time, so the
stand-in refuses a template it cannot render (as Ollama refuses one Go cannot parse) instead of
rendering it wrongly."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

FUNCTIONS = {"eq", "ne", "not", "and", "or", "len", "slice", "index"}


class TemplateError(ValueError):
    pass


class _CutAtResponse(Exception):
    """Raised when `.Response` is reached while rendering the turn being generated: Ollama renders a
    legacy (`.Prompt`/`.Response`) template only up to where the model's answer goes."""


# --- syntax tree ---------------------------------------------------------------------------------

@dataclass
class Text:
    text: str


@dataclass
class Expr:
    """A command: `func arg...` when `func` is set, else a single operand in `args[0]`."""

    func: str | None
    args: list  # of ("field", base, [names]) | ("lit", value) | ("expr", Expr)


@dataclass
class Output:
    expr: Expr
    declare: str | None = None  # `$x := expr` prints nothing and binds $x


@dataclass
class If:
    branches: list[tuple[Expr, list]]  # (condition, body)
    otherwise: list = field(default_factory=list)


@dataclass
class Range:
    expr: Expr
    index_var: str | None
    value_var: str | None
    body: list
    otherwise: list = field(default_factory=list)


# --- lexing --------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>-?\d+)
  | (?P<decl>:=)
  | (?P<comma>,)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<bad>\S)
)""", re.X)


def _split(source: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", inner)] with Go's trim markers applied to the neighbouring text."""
    pieces: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            pieces.append(("text", text))
        inner = m.group(2).strip()
        if not (inner.startswith("/*") and inner.endswith("*/")):
            pieces.append(("action", inner))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = source[pos:]
    if trim_next:
        tail = tail.lstrip()
    if "{{" in tail:
        raise TemplateError("template: unclosed action")
    if tail:
        pieces.append(("text", tail))
    return pieces


def _tokens(action: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(action):
        kind = m.lastgroup
        if kind == "bad":
            raise TemplateError(f"template: unexpected {m.group(kind)!r} in {{{{{action}}}}}")
        out.append((kind, m.group(kind)))
    return out


# --- parsing -------------------------------------------------------------------------------------

class _ExprParser:
    def __init__(self, tokens: list[tuple[str, str]], action: str):
        self.tokens, self.pos, self.action = tokens, 0, action

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def take(self):
        tok = self.peek()
        self.pos += 1
        return tok

    def command(self, closing: str | None = None) -> Expr:
        kind, value = self.peek()
        if kind == "ident":
            if value not in FUNCTIONS and value not in ("true", "false", "nil"):
                raise TemplateError(f'template: function "{value}" not defined')
            if value in ("true", "false", "nil"):
                self.take()
                return Expr(None, [("lit", {"true": True, "false": False, "nil": None}[value])])
            self.take()
            args = []
            while self.peek()[0] not in (None, closing):
                args.append(self.operand())
            return Expr(value, args)
        operand = self.operand()
        if self.peek()[0] not in (None, closing):
            raise TemplateError(f"template: can't give argument to non-function in {{{{{self.action}}}}}")
        return Expr(None, [operand])

    def operand(self):
        kind, value = self.take()
        if kind == "str":
            return ("lit", json.loads(value))
        if kind == "raw":
            return ("lit", value[1:-1])
        if kind == "num":
            return ("lit", int(value))
        if kind == "field":
            return ("field", ".", [] if value == "." else value[1:].split("."))
        if kind == "var":
            base, *names = value.split(".")
            return ("field", base, names)
        if kind == "ident" and value in ("true", "false", "nil"):
            return ("lit", {"true": True, "false": False, "nil": None}[value])
        if kind == "open":
            inner = self.command(closing="close")
            if self.take()[0] != "close":
                raise TemplateError(f"template: unclosed left paren in {{{{{self.action}}}}}")
            return ("expr", inner)
        raise TemplateError(f"template: unexpected {value!r} in {{{{{self.action}}}}}")

    def done(self) -> None:
        if self.pos != len(self.tokens):
            raise TemplateError(f"template: unexpected {self.peek()[1]!r} in {{{{{self.action}}}}}")


def _parse_expr(action: str) -> Expr:
    parser = _ExprParser(_tokens(action), action)
    expr = parser.command()
    parser.done()
    return expr


def parse(source: str) -> list:
    """The syntax tree of `source`; TemplateError for anything outside the supported subset."""
    pieces = _split(source)
    body, stop = _parse_block(pieces, 0, top=True)
    return body


def _parse_block(pieces, i, top=False):
    """Nodes until an `else`/`end` at this level; returns (nodes, index of that keyword)."""
    nodes: list = []
    while i < len(pieces):
        kind, value = pieces[i]
        if kind == "text":
            nodes.append(Text(value))
            i += 1
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"template: unexpected {{{{{word}}}}}")
            return nodes, i
        if word == "if":
            node, i = _parse_if(pieces, i)
        elif word == "range":
            node, i = _parse_range(pieces, i)
        elif word in ("with", "define", "template", "block", "break", "continue"):
            raise TemplateError(f"template: {{{{{word}}}}} is not supported by the stand-in")
        else:
            node, i = _parse_output(value), i + 1
        nodes.append(node)
    if not top:
        raise TemplateError("template: unexpected EOF (missing {{end}})")
    return nodes, i


def _parse_output(action: str) -> Output:
    m = re.match(r"^(\$[A-Za-z0-9_]+)\s*:=\s*(.+)$", action, re.S)
    if m:
        return Output(_parse_expr(m.group(2)), declare=m.group(1))
    if "|" in action.replace('"|"', ""):
        raise TemplateError("template: pipelines with | are not supported by the stand-in")
    return Output(_parse_expr(action))


def _parse_if(pieces, i):
    branches, otherwise = [], []
    condition = _parse_expr(pieces[i][1][2:].strip())
    i += 1
    while True:
        body, i = _parse_block(pieces, i)
        branches.append((condition, body))
        keyword = pieces[i][1]
        if keyword == "end":
            return If(branches, otherwise), i + 1
        rest = keyword[4:].strip()
        if rest.startswith("if "):
            condition = _parse_expr(rest[3:].strip())
            i += 1
            continue
        if rest:
            raise TemplateError(f"template: unexpected {{{{{keyword}}}}}")
        otherwise, i = _parse_block(pieces, i + 1)
        if pieces[i][1] != "end":
            raise TemplateError("template: expected {{end}} after {{else}}")
        return If(branches, otherwise), i + 1


def _parse_range(pieces, i):
    header = pieces[i][1][5:].strip()
    index_var = value_var = None
    m = re.match(r"^(\$[A-Za-z0-9_]+)\s*(?:,\s*(\$[A-Za-z0-9_]+)\s*)?:=\s*(.+)$", header, re.S)
    if m:
        if m.group(2):
            index_var, value_var = m.group(1), m.group(2)
        else:
            value_var = m.group(1)
        header = m.group(3)
    expr = _parse_expr(header)
    body, i = _parse_block(pieces, i + 1)
    otherwise = []
    if pieces[i][1] == "else":
        otherwise, i = _parse_block(pieces, i + 1)
    if pieces[i][1] != "end":
        raise TemplateError("template: expected {{end}} to close {{range}}")
    return Range(expr, index_var, value_var, body, otherwise), i + 1


# --- execution -----------------------------------------------------------------------------------

def _truth(value) -> bool:
    return not (value is None or value is False or value == 0 or value == "" or value == [] or value == {})


def _text(value) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


class _Scope:
    def __init__(self, root, cut_at_response: bool):
        self.root, self.cut = root, cut_at_response
        self.vars: list[dict] = [{"$": root}]

    def lookup(self, name):
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise TemplateError(f'template: undefined variable "{name}"')

    def bind(self, name, value):
        self.vars[-1][name] = value


def _resolve(operand, dot, scope: _Scope):
    kind = operand[0]
    if kind == "lit":
        return operand[1]
    if kind == "expr":
        return _evaluate(operand[1], dot, scope)
    _, base, names = operand
    value = dot if base == "." else scope.lookup(base)
    for name in names:
        if scope.cut and name == "Response" and value is scope.root:
            raise _CutAtResponse
        if isinstance(value, dict):
            value = value.get(name)
        elif value is None:
            return None
        else:
            raise TemplateError(f"template: can't evaluate field {name} in type {type(value).__name__}")
    return value


def _evaluate(expr: Expr, dot, scope: _Scope):
    if expr.func is None:
        return _resolve(expr.args[0], dot, scope)
    if expr.func in ("and", "or"):  # Go evaluates these lazily and returns the deciding operand
        value = None
        for arg in expr.args:
            value = _resolve(arg, dot, scope)
            if _truth(value) != (expr.func == "and"):
                return value
        return value
    args = [_resolve(a, dot, scope) for a in expr.args]
    try:
        if expr.func == "eq":
            return any(args[0] == other for other in args[1:])
        if expr.func == "ne":
            return args[0] != args[1]
        if expr.func == "not":
            return not _truth(args[0])
        if expr.func == "len":
            return len(args[0] or [])
        if expr.func == "slice":
            return args[0][slice(*args[1:3])] if len(args) > 1 else args[0]
        if expr.func == "index":
            value = args[0]
            for key in args[1:]:
                value = value[key]
            return value
    except (IndexError, KeyError, TypeError) as exc:
        raise TemplateError(f"template: error calling {expr.func}: {exc}") from None
    raise TemplateError(f'template: function "{expr.func}" not defined')


def _execute(nodes, dot, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, Output):
            value = _evaluate(node.expr, dot, scope)
            if node.declare:
                scope.bind(node.declare, value)
            else:
                out.append(_text(value))
        elif isinstance(node, If):
            for condition, body in node.branches:
                if _truth(_evaluate(condition, dot, scope)):
                    _run_block(body, dot, scope, out)
                    break
            else:
                _run_block(node.otherwise, dot, scope, out)
        elif isinstance(node, Range):
            items = _evaluate(node.expr, dot, scope) or []
            if not items:
                _run_block(node.otherwise, dot, scope, out)
            for index, item in enumerate(items):
                scope.vars.append({})
                if node.index_var:
                    scope.bind(node.index_var, index)
                if node.value_var:
                    scope.bind(node.value_var, item)
                try:
                    _execute(node.body, item, scope, out)
                finally:
                    scope.vars.pop()


def _run_block(nodes, dot, scope, out):
    scope.vars.append({})
    try:
        _execute(nodes, dot, scope, out)
    finally:
        scope.vars.pop()


def execute(tree: list, data: dict, *, cut_at_response: bool = False) -> str:
    """Renders a parsed template over `data`; with `cut_at_response`, stops where `.Response` is
    read (the place the model's answer goes)."""
    out: list[str] = []
    try:
        _execute(tree, data, _Scope(data, cut_at_response), out)
    except _CutAtResponse:
        pass
    return "".join(out)


def uses_messages(source: str) -> bool:
    """Whether a template reads `.Messages` (Ollama then renders the whole chat in one pass)."""
    return ".Messages" in source
