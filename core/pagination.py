"""Opaque page tokens. A token carries the offset of the next page and a fingerprint of the query
that produced it, so a token replayed against a different query is refused instead of silently
returning the wrong rows."""

from __future__ import annotations

import base64
import hashlib
import json

from trainforge.core.errors import InvalidArgument


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(offset: int, query: str) -> str:
    raw = json.dumps({"o": offset, "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: str) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        offset, token_query = int(data["o"]), data["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument.one("page_token", "is not a token this server issued") from None
    if token_query != query or offset < 0:
        raise InvalidArgument.one("page_token", "belongs to a different query; restart from the first page")
    return offset


def next_token(offset: int, page_size: int, total: int, query: str) -> str:
    return encode(offset + page_size, query) if offset + page_size < total else ""
