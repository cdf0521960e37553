"""Authentication, authorisation and audit for every RPC. The rule for a method comes from
server.access_rules; the key from the `authorization: Bearer tf_...` metadata (Envoy forwards the
HTTP header). Mutating calls and every denial are appended to the audit log. Checks use the method
and the request message, never the URL: the transcoder lets a query parameter override a path
field, so the URL is not evidence of anything."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from trainforge.core.access.audit import Actor, AuditLog, Entry
from trainforge.core.access.keys import ROLE_RANK, ApiKey, KeyStore
from trainforge.core.db.listen import listen_forever
from trainforge.core.errors import PermissionDenied, Unauthenticated
from trainforge.server.access_rules import ANONYMOUS, RULES, Rule, resource_of

CACHE_SECONDS = 30.0  # revocation reaches servers at once through NOTIFY; the TTL bounds a missed one
TOUCH_SECONDS = 60.0  # last_used_time is written at most once a minute per key


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str


ANONYMOUS_PRINCIPAL = Principal("-", ANONYMOUS)
AUTH_DISABLED = Principal("auth-disabled", "admin")

# The caller of the RPC being handled; set by the interceptor, read by servicers (job ownership).
principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS_PRINCIPAL)


def current_principal() -> Principal:
    return principal_var.get()


def bearer_token(metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the authorization header must be `Bearer <API key>`", reason="MALFORMED_KEY")
            return token.strip()
    return ""


class Authorizer:
    def __init__(self, keys: KeyStore, audit: AuditLog, *, enabled: bool = True):
        self.keys, self.audit, self.enabled = keys, audit, enabled
        self._cache: dict[str, tuple[ApiKey, float]] = {}
        self._touched: dict[str, float] = {}
        self._listener: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, dsn: str) -> None:
        self._listener = asyncio.create_task(self._listen(dsn), name="api-key-invalidation")

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            try:
                await self._listener
            except asyncio.CancelledError:
                pass

    async def _listen(self, dsn: str) -> None:
        """Drop cached keys when `trainforge keys revoke` (any process) notifies a revocation;
        drop them all when not listening (the cache TTL covers a reconnect's gap)."""
        def revoked(key_id: str) -> None:
            self._cache = {t: e for t, e in self._cache.items() if e[0].key_id != key_id}

        await listen_forever(dsn, "trainforge_api_keys", revoked, on_connect=self._cache.clear,
                             on_lost=self._cache.clear)

    # -- checks ------------------------------------------------------------------------------
    async def identify(self, method: str, metadata) -> tuple[Principal, Rule]:
        """Who is calling, and the rule of the method. Raises UNAUTHENTICATED for a missing, bad,
        revoked or expired key, PERMISSION_DENIED for a method without a rule."""
        rule = RULES.get(method)
        if rule is None:  # deny by default: a method nobody wrote a rule for is nobody's
            raise PermissionDenied(f"{method} has no access rule", reason="NO_ACCESS_RULE")
        if not self.enabled:
            return AUTH_DISABLED, rule
        token = bearer_token(metadata)
        if not token:
            if rule.role == ANONYMOUS:
                return ANONYMOUS_PRINCIPAL, rule
            raise Unauthenticated("this call needs an API key: send `authorization: Bearer tf_...`",
                                  reason="MISSING_KEY")
        key = await self._key(token)
        return Principal(key.key_id, key.role), rule

    @staticmethod
    def check(principal: Principal, rule: Rule, method: str) -> None:
        """Raises PERMISSION_DENIED when the caller's role is below the rule's."""
        if rule.role == ANONYMOUS:
            return
        if principal.role not in ROLE_RANK or ROLE_RANK[principal.role] < ROLE_RANK[rule.role]:
            raise PermissionDenied(f"API key {principal.key_id} has role {principal.role}; "
                                   f"{method.rsplit('/', 1)[-1]} needs {rule.role}", reason="ROLE_TOO_LOW",
                                   metadata={"key_id": principal.key_id, "required_role": rule.role})

    async def authenticate(self, token: str) -> ApiKey:
        """The usable key of `token` (cached); UNAUTHENTICATED for a bad, revoked or expired one."""
        return await self._key(token)

    async def _key(self, token: str) -> ApiKey:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and now - cached[1] < CACHE_SECONDS and cached[0].usable_at(_utcnow()):
            key = cached[0]
        else:
            self._cache.pop(digest, None)
            key = await self.keys.authenticate(token)
            self._cache[digest] = (key, now)
        if now - self._touched.get(key.key_id, 0.0) > TOUCH_SECONDS:
            self._touched[key.key_id] = now
            await self.keys.touch(key.key_id)
        return key

    @staticmethod
    def actor(principal: Principal, method: str, rule: Rule, request: Callable[[], object], request_id: str,
              client: str) -> Actor:
        """The caller as the stores record its change (core.access.audit.audited_transaction);
        `request` is read then, since a client stream's first message arrives after this."""
        def resource() -> str:
            current = request()
            return resource_of(rule, current) if current is not None else ""

        return Actor(principal.key_id, principal.role, method, request_id, client, resource)

    async def record(self, principal: Principal, method: str, rule: Rule | None, request: object,
                     outcome: str, request_id: str, client: str) -> None:
        resource = resource_of(rule, request) if rule and request is not None else ""
        await self.audit.append(Entry(principal.key_id, principal.role, method, resource, request_id, outcome,
                                      client))


def denied_principal(metadata) -> Principal:
    """Who a refused call claimed to be, for the audit record: the key id from the token, if any."""
    try:
        token = bearer_token(metadata)
    except Unauthenticated:
        return Principal("malformed", "-")
    if token.startswith("tf_") and token.count("_") >= 2:
        return Principal(token.split("_")[1][:12], "-")
    return Principal("-", "-")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
