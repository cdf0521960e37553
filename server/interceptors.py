"""Wraps every RPC handler: request id, structured access log, Prometheus metrics, and the mapping
of exceptions to statuses (through server.errors, the single error table)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
from grpc import aio

from trainforge.core.errors import TrainforgeError
from trainforge.server.errors import code_for, to_status
from trainforge.server.observability import RPC_LATENCY, RPC_REQUESTS, request_id_var

log = logging.getLogger("trainforge.rpc")

# Envoy generates x-request-id for each HTTP request and forwards it as gRPC metadata.
REQUEST_ID_KEY = "x-request-id"


def _request_id(context: aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and value and len(value) <= 128:
            return value
    return uuid.uuid4().hex


class _Call:
    """Bookkeeping for one call: its id, timing, and what to do with the outcome."""

    def __init__(self, method: str, context: aio.ServicerContext):
        self.method = method
        self.context = context
        self.request_id = _request_id(context)
        self.started = time.perf_counter()
        self.token = request_id_var.set(self.request_id)

    async def begin(self) -> None:
        await self.context.send_initial_metadata(((REQUEST_ID_KEY, self.request_id),))

    async def fail(self, exc: BaseException) -> None:
        if isinstance(exc, TrainforgeError):
            self.finish(code_for(exc))
        else:
            log.exception("unhandled error in %s", self.method)
            self.finish(grpc.StatusCode.INTERNAL)
        await self.context.abort_with_status(to_status(exc, self.request_id))

    def finish(self, code: grpc.StatusCode) -> None:
        elapsed = time.perf_counter() - self.started
        RPC_REQUESTS.labels(self.method, code.name).inc()
        RPC_LATENCY.labels(self.method).observe(elapsed)
        level = logging.INFO if code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND) else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"fields": {
                "method": self.method, "code": code.name, "duration_ms": round(elapsed * 1000, 3),
                "peer": self.context.peer()}})
        request_id_var.reset(self.token)


def _is_abort(exc: BaseException) -> bool:
    # context.abort raises a plain Exception subclass internal to grpc.aio (AbortError).
    return type(exc).__name__ == "AbortError"


class RpcInterceptor(aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(method, handler.stream_stream), handler.request_deserializer, handler.response_serializer)


def _wrap_unary(method: str, behavior):
    async def wrapper(request, context):
        call = _Call(method, context)
        try:
            await call.begin()
            response = await behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped, logged and counted here
            if _is_abort(exc):
                call.finish(context.code() or grpc.StatusCode.UNKNOWN)
                raise
            await call.fail(exc)
            return None
        call.finish(grpc.StatusCode.OK)
        return response

    return wrapper


def _wrap_stream(method: str, behavior):
    async def wrapper(request, context):
        call = _Call(method, context)
        started = False
        try:
            async for response in behavior(request, context):
                # Headers go out with the first message, not before: a stream that fails before
                # producing anything then ends as a trailers-only response, which the gateway
                # turns into a proper HTTP error status instead of a 200 with an error inside.
                if not started:
                    await call.begin()
                    started = True
                yield response
        except Exception as exc:  # noqa: BLE001
            if _is_abort(exc):
                call.finish(context.code() or grpc.StatusCode.UNKNOWN)
                raise
            await call.fail(exc)
            return
        call.finish(grpc.StatusCode.OK)

    return wrapper
