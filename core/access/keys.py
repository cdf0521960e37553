"""API keys. A key is `tf_<id>_<secret>`: the id is public (it names the key in lists and the
audit log), the secret is 32 random bytes shown once and stored only as its sha256 — a hash is
enough because the secret is random, not a password, so there is nothing to brute-force."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from psycopg_pool import AsyncConnectionPool

from trainforge.core.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated

ROLES = ("viewer", "trainer", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
TOKEN_RE = re.compile(r"^tf_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
OWNER_RE = re.compile(r"^[^\x00-\x1f]{1,128}$")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    owner: str
    role: str
    description: str
    create_time: datetime
    expire_time: datetime | None
    last_used_time: datetime | None
    revoke_time: datetime | None

    def usable_at(self, now: datetime) -> bool:
        return self.revoke_time is None and (self.expire_time is None or self.expire_time > now)


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    token: str  # shown once; only its hash is stored


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: dict) -> ApiKey:
    return ApiKey(row["id"], row["owner"], row["role"], row["description"], row["create_time"],
                  row["expire_time"], row["last_used_time"], row["revoke_time"])


def parse_token(token: str) -> tuple[str, str]:
    match = TOKEN_RE.match(token)
    if not match:
        raise Unauthenticated("the API key is malformed; expected `Authorization: Bearer tf_<id>_<secret>`",
                              reason="MALFORMED_KEY")
    return match.group(1), match.group(2)


class KeyStore:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def create(self, owner: str, role: str, *, expires_in: timedelta | None = None,
                     description: str = "") -> NewKey:
        violations = []
        if not OWNER_RE.match(owner or ""):
            violations.append(FieldViolation("owner", "must be 1-128 printable characters"))
        if role not in ROLES:
            violations.append(FieldViolation("role", f"must be one of {', '.join(ROLES)} (got {role!r})"))
        if expires_in is not None and expires_in <= timedelta(0):
            violations.append(FieldViolation("expires_in", "must be positive"))
        if len(description) > 1024:
            violations.append(FieldViolation("description", "must be at most 1024 characters"))
        if violations:
            raise InvalidArgument(violations)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        expire = datetime.now(timezone.utc) + expires_in if expires_in else None
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO api_keys (id, secret_sha256, owner, role, description, expire_time) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                (key_id, _hash(secret), owner, role, description, expire))
            row = await cur.fetchone()
        return NewKey(_key(row), f"tf_{key_id}_{secret}")

    async def authenticate(self, token: str) -> ApiKey:
        """The key a bearer token names, if the secret matches and the key is usable."""
        key_id, secret = parse_token(token)
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM api_keys WHERE id = %s", (key_id,))
            row = await cur.fetchone()
        # Compare in constant time, and fail the same way for unknown ids and wrong secrets.
        expected = row["secret_sha256"] if row else _hash("")
        if not hmac.compare_digest(expected, _hash(secret)) or row is None:
            raise Unauthenticated("the API key is not valid", reason="INVALID_KEY")
        key = _key(row)
        now = datetime.now(timezone.utc)
        if key.revoke_time is not None:
            raise Unauthenticated(f"API key {key.key_id} was revoked", reason="KEY_REVOKED",
                                  metadata={"key_id": key.key_id})
        if key.expire_time is not None and key.expire_time <= now:
            raise Unauthenticated(f"API key {key.key_id} expired", reason="KEY_EXPIRED",
                                  metadata={"key_id": key.key_id})
        return key

    async def touch(self, key_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE api_keys SET last_used_time = now() WHERE id = %s", (key_id,))

    async def list(self, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else "WHERE revoke_time IS NULL"
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT * FROM api_keys {where} ORDER BY create_time, id")
            return [_key(r) for r in await cur.fetchall()]

    async def revoke(self, key_id: str) -> ApiKey:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoke_time = COALESCE(revoke_time, now()) WHERE id = %s RETURNING *", (key_id,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no API key {key_id!r}", metadata={"key_id": key_id})
            # Servers drop their cached copy of the key on this notification (server.auth).
            await conn.execute("SELECT pg_notify('trainforge_api_keys', %s)", (key_id,))
        return _key(row)

    async def count(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM api_keys")
            return (await cur.fetchone())["n"]
