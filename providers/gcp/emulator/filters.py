"""The subset of Compute Engine list-filter expressions the fake understands.

Called by :mod:`providers.gcp.emulator.compute` for ``instances.list``/``aggregatedList`` ``filter=``.
Grammar (AND binds tighter than OR, as in the Compute API)::

    expr   := and ( "OR" and )*
    and    := unary ( "AND" unary )*          # juxtaposition also means AND
    unary  := "NOT" unary | "-" unary | "(" expr ")" | cmp
    cmp    := FIELD OP VALUE                  # OP: = != eq ne
    FIELD  := name | status | zone | machineType | labels.<key>
    VALUE  := "quoted string" | bare-word

``=``/``!=`` compare strings exactly; ``eq``/``ne`` match an RE2-style regular expression against
the whole value (Compute's documented semantics). A filter the fake cannot parse is answered with
400 ``invalid`` like the real API, so a provider emitting a malformed filter fails in tests too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lp>\() | (?P<rp>\)) |
        (?P<op>!=|=|\beq\b|\bne\b) |
        (?P<str>"(?:[^"\\]|\\.)*") |
        (?P<word>[A-Za-z0-9_.\-/:*]+)
    )""",
    re.VERBOSE,
)

_FIELDS = {"name", "status", "zone", "machineType", "id"}


class FilterError(ValueError):
    """The filter expression is malformed or names an unsupported field."""


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"unexpected character at offset {pos}: {text[pos : pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append(_Tok(kind, value))
    return out


def _field_value(resource: Mapping[str, Any], field: str) -> str | None:
    if field.startswith("labels."):
        labels = resource.get("labels") or {}
        value = labels.get(field[len("labels.") :])
        return None if value is None else str(value)
    raw = resource.get(field)
    if raw is None:
        return None
    text = str(raw)
    # Compute compares zone and machineType by their last path segment as well as the full URL.
    return text


def _compare(field: str, op: str, value: str) -> Predicate:
    if field not in _FIELDS and not (field.startswith("labels.") and len(field) > len("labels.")):
        raise FilterError(f"unsupported filter field {field!r}")
    if op in ("eq", "ne"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise FilterError(f"bad regular expression {value!r}: {exc}") from exc

        def regex(resource: Mapping[str, Any]) -> bool:
            got = _field_value(resource, field)
            hit = got is not None and (
                pattern.fullmatch(got) is not None or pattern.fullmatch(got.rsplit("/", 1)[-1]) is not None
            )
            return hit if op == "eq" else not hit

        return regex

    def exact(resource: Mapping[str, Any]) -> bool:
        got = _field_value(resource, field)
        hit = got is not None and (got == value or got.rsplit("/", 1)[-1] == value)
        return hit if op == "=" else not hit

    return exact


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise FilterError("unexpected end of filter")
        self.i += 1
        return tok

    def expr(self) -> Predicate:
        parts = [self.conj()]
        while (tok := self.peek()) is not None and tok.kind == "word" and tok.text == "OR":
            self.take()
            parts.append(self.conj())
        if len(parts) == 1:
            return parts[0]
        return lambda r: any(p(r) for p in parts)

    def conj(self) -> Predicate:
        parts = [self.unary()]
        while (tok := self.peek()) is not None and not (tok.kind == "rp" or (tok.kind == "word" and tok.text == "OR")):
            if tok.kind == "word" and tok.text == "AND":
                self.take()
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda r: all(p(r) for p in parts)

    def unary(self) -> Predicate:
        tok = self.take()
        if tok.kind == "word" and tok.text in ("NOT", "-"):
            inner = self.unary()
            return lambda r: not inner(r)
        if tok.kind == "word" and tok.text.startswith("-") and len(tok.text) > 1:
            self.toks[self.i - 1] = _Tok("word", tok.text[1:])
            self.i -= 1
            inner = self.unary()
            return lambda r: not inner(r)
        if tok.kind == "lp":
            inner = self.expr()
            if self.take().kind != "rp":
                raise FilterError("expected ')'")
            return inner
        if tok.kind != "word":
            raise FilterError(f"expected a field name, got {tok.text!r}")
        op = self.take()
        if op.kind != "op":
            raise FilterError(f"expected one of = != eq ne after {tok.text!r}, got {op.text!r}")
        value = self.take()
        if value.kind not in ("str", "word"):
            raise FilterError(f"expected a value after {tok.text} {op.text}")
        return _compare(tok.text, op.text, value.text)


def compile_filter(text: str | None) -> Predicate:
    """A predicate over instance resources (JSON dicts) for ``text``; everything for empty text."""
    if not text or not text.strip():
        return lambda r: True
    parser = _Parser(_tokens(text))
    pred = parser.expr()
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek().text!r} in filter")  # type: ignore[union-attr]
    return pred
