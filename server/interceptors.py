"""Wraps every RPC handler: request id, authentication and authorisation (server.auth), the audit
record of mutating and denied calls, a structured access log, Prometheus metrics, and the mapping
of exceptions to statuses (through server.errors, the single error table).

The audit record of a change is written by the store in the change's own transaction
(core.access.audit.audited_transaction) from the actor this interceptor names for a mutating
call; the interceptor itself records only calls that committed nothing (denied or failed calls,
and mutating calls whose handler wrote no database row)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
from grpc import aio

from trainforge.core.access.audit import Actor, current_actor
from trainforge.core.errors import FieldViolation, InvalidArgument, PermissionDenied, TrainforgeError, Unauthenticated
from trainforge.server.auth import Authorizer, Principal, denied_principal, principal_var
from trainforge.server.body_check_service import UNKNOWN_FIELDS_HEADER
from trainforge.server.body_fields import decode
from trainforge.server.errors import code_for, to_status
from trainforge.server.observability import RPC_LATENCY, RPC_REQUESTS, request_id_var

log = logging.getLogger("trainforge.rpc")

# Envoy generates x-request-id for each HTTP request and forwards it as gRPC metadata.
REQUEST_ID_KEY = "x-request-id"
# The gateway's body check runs once per REST call with a body: logged at DEBUG when it succeeds,
# so the access log holds one line per call, the call's own.
QUIET_METHODS = frozenset({"/envoy.service.auth.v3.Authorization/Check"})
# The REST caller's address as Envoy saw it on the connection (gateway/envoy.yaml sets it from
# %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%, overwriting any value a client sent). Believed only from a
# loopback peer: the gateway reaches this server over loopback (server.service).
CLIENT_ADDRESS_HEADER = "x-trainforge-client-address"


def _request_id(metadata) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and value and len(value) <= 128:
            return value
    return uuid.uuid4().hex


def _loopback_peer(peer: str) -> bool:
    """A gRPC peer string (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`) on loopback."""
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_address(peer: str, metadata) -> str:
    """Who is calling, for the audit log: the gateway's client (in gRPC's peer notation) when the
    call came through the gateway, else the connection's peer."""
    if not _loopback_peer(peer):
        return peer
    for key, value in metadata or ():
        if key == CLIENT_ADDRESS_HEADER and len(value) <= 64:
            host, _, port = value.rpartition(":")
            try:
                address = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                break
            if port.isdigit():
                return f"ipv{address.version}:{host}:{port}"
    return peer


class _Call:
    """One call: its id, who made it, timing, and what to do with the outcome."""

    def __init__(self, method: str, context: aio.ServicerContext, authorizer: Authorizer | None):
        self.method = method
        self.context = context
        self.authorizer = authorizer
        self.metadata = context.invocation_metadata() or ()
        self.request_id = _request_id(self.metadata)
        self.started = time.perf_counter()
        self.token = request_id_var.set(self.request_id)
        self.principal: Principal | None = None
        self.rule = None
        self.request: object = None
        self.client = client_address(context.peer() or "", self.metadata)
        self.actor: Actor | None = None
        self.actor_token = None

    async def authorize(self) -> None:
        if self.authorizer is not None:
            self.principal, self.rule = await self.authorizer.identify(self.method, self.metadata)
            principal_var.set(self.principal)
            self.authorizer.check(self.principal, self.rule, self.method)
            if self.rule.mutating:  # the stores record the change in its transaction as this actor
                self.actor = self.authorizer.actor(self.principal, self.method, self.rule, lambda: self.request,
                                                   self.request_id, self.client)
                self.actor_token = current_actor.set(self.actor)
        for key, value in self.metadata:
            if key == UNKNOWN_FIELDS_HEADER:  # set by the gateway only (server.body_check_service)
                unknown = decode(value)
                raise InvalidArgument([FieldViolation(p.field, p.description) for p in unknown],
                                      message="the request body has fields this API does not define: "
                                      + ", ".join(p.field for p in unknown))

    def begin(self) -> None:
        # In the trailers, which every call sends anyway: an extra initial-metadata send per call
        # cost 4-11% of the server's CPU (py-spy, benchmarks/README.md). Envoy returns the id to
        # REST callers itself (always_set_request_id_in_response).
        self.context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))

    async def fail(self, exc: BaseException) -> None:
        code = code_for(exc) if isinstance(exc, TrainforgeError) else grpc.StatusCode.INTERNAL
        if not isinstance(exc, TrainforgeError):
            log.exception("unhandled error in %s", self.method)
        if isinstance(exc, (Unauthenticated, PermissionDenied)) and self.principal is None:
            await self._audit(denied_principal(self.metadata), code)
        elif self.principal is not None and (self.rule.mutating or isinstance(exc, PermissionDenied)):
            await self._audit(self.principal, code)
        self.finish(code)
        await self.context.abort_with_status(to_status(exc, self.request_id))

    async def succeed(self) -> None:
        # A call whose change committed has its record already, written in the same transaction.
        # One that wrote no row (nothing in the database changed) is recorded here.
        if self.principal is not None and self.rule.mutating and not (self.actor and self.actor.committed):
            await self._audit(self.principal, grpc.StatusCode.OK)
        self.finish(grpc.StatusCode.OK)

    async def _audit(self, principal: Principal, code: grpc.StatusCode) -> None:
        try:
            await self.authorizer.record(principal, self.method, self.rule, self.request, code.name,
                                         self.request_id, self.client)
        except Exception:  # noqa: BLE001 - no change rides on this record (see succeed); logged loudly
            log.exception("could not append to the audit log for %s", self.method)

    def finish(self, code: grpc.StatusCode) -> None:
        elapsed = time.perf_counter() - self.started
        RPC_REQUESTS.labels(self.method, code.name).inc()
        RPC_LATENCY.labels(self.method).observe(elapsed)
        level = logging.INFO if code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND) else logging.WARNING
        if self.method in QUIET_METHODS and code == grpc.StatusCode.OK:
            level = logging.DEBUG
        if log.isEnabledFor(level):
            fields = {"method": self.method, "code": code.name, "duration_ms": round(elapsed * 1000, 3),
                      "peer": self.client}
            if self.principal is not None:
                fields["key_id"] = self.principal.key_id
            log.log(level, "rpc", extra={"fields": fields})
        if self.actor_token is not None:
            current_actor.reset(self.actor_token)
        request_id_var.reset(self.token)


def _is_abort(exc: BaseException) -> bool:
    # context.abort raises a plain Exception subclass internal to grpc.aio (AbortError).
    return type(exc).__name__ == "AbortError"


class RpcInterceptor(aio.ServerInterceptor):
    def __init__(self, authorizer: Authorizer | None = None):
        self.authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method, auth = details.method, self.authorizer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, auth), handler.request_deserializer,
                handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream, auth), handler.request_deserializer,
                handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_client_stream(method, handler.stream_unary, auth), handler.request_deserializer,
                handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(method, handler.stream_stream, auth), handler.request_deserializer,
            handler.response_serializer)


async def _respond_once(call: _Call, context, invoke):
    """Runs a handler that returns one response (unary or client-streaming request)."""
    try:
        call.begin()
        await call.authorize()
        response = await invoke()
    except asyncio.CancelledError:
        call.finish(grpc.StatusCode.CANCELLED)
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is mapped, logged and counted here
        if _is_abort(exc):
            call.finish(context.code() or grpc.StatusCode.UNKNOWN)
            raise
        await call.fail(exc)
        return None
    await call.succeed()
    return response


def _wrap_unary(method: str, behavior, authorizer: Authorizer | None):
    async def wrapper(request, context):
        call = _Call(method, context, authorizer)
        call.request = request
        return await _respond_once(call, context, lambda: behavior(request, context))

    return wrapper


def _wrap_client_stream(method: str, behavior, authorizer: Authorizer | None):
    """A client stream's resource is read from its first message, as the handler consumes it."""

    async def wrapper(request_iterator, context):
        call = _Call(method, context, authorizer)

        async def observed():
            async for message in request_iterator:
                if call.request is None:
                    call.request = message
                yield message

        return await _respond_once(call, context, lambda: behavior(observed(), context))

    return wrapper


def _wrap_stream(method: str, behavior, authorizer: Authorizer | None):
    async def wrapper(request, context):
        call = _Call(method, context, authorizer)
        call.request = request
        try:
            call.begin()
            await call.authorize()
            async for response in behavior(request, context):
                yield response
        except asyncio.CancelledError:
            call.finish(grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:  # noqa: BLE001
            if _is_abort(exc):
                call.finish(context.code() or grpc.StatusCode.UNKNOWN)
                raise
            await call.fail(exc)
            return
        await call.succeed()

    return wrapper
