"""The one place where domain errors become gRPC statuses. Each status carries a
google.rpc.ErrorInfo (reason, domain, metadata) and, for bad input, a google.rpc.BadRequest listing
every field violation. A lost database connection (PostgreSQL restarting, a backend terminated, no
connection in time) is UNAVAILABLE: the call can be retried, and the pool replaces the connection.
Anything else unexpected becomes INTERNAL with no detail beyond a request id: tracebacks go to the
log, never to the client."""

from __future__ import annotations

import grpc
import psycopg
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from psycopg_pool import PoolClosed

from trainforge.core import errors

DOMAIN = "trainforge"

# Domain error -> gRPC code. Envoy's transcoder turns the code into the HTTP status
# (INVALID_ARGUMENT 400, NOT_FOUND 404, ALREADY_EXISTS/ABORTED 409, FAILED_PRECONDITION 400, ...).
ERROR_CODES: dict[type[errors.TrainforgeError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def database_unavailable(exc: BaseException) -> bool:
    """A connection-level failure. A closed pool is not one: that is the server shutting down or a bug."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolClosed)


def code_for(exc: BaseException) -> grpc.StatusCode:
    if database_unavailable(exc):
        return grpc.StatusCode.UNAVAILABLE
    for cls in type(exc).__mro__:
        if cls in ERROR_CODES:
            return ERROR_CODES[cls]
    return grpc.StatusCode.INTERNAL


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(exc: BaseException, request_id: str = "") -> grpc.Status:
    code = code_for(exc)
    if isinstance(exc, errors.TrainforgeError):
        message, reason, metadata = exc.message, exc.reason, dict(exc.metadata)
    elif database_unavailable(exc):
        message, reason, metadata = "the database is unavailable; retry", "DATABASE_UNAVAILABLE", {}
    else:
        message, reason, metadata = "internal error; the server log has the details", "INTERNAL", {}
    if request_id:
        metadata["request_id"] = request_id
        if code == grpc.StatusCode.INTERNAL:
            message = f"internal error (request id {request_id}); the server log has the details"
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))]
    if isinstance(exc, errors.InvalidArgument):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations
        ])))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(status)
