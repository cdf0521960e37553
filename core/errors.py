"""Domain errors. Core code raises these; the server maps each class to one gRPC code with
google.rpc details in a single table (trainforge.server.errors). No grpc import here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one field of a request; `field` is a dotted path (`architecture.layers`)."""

    field: str
    description: str


class TrainforgeError(Exception):
    """Base of every domain error. `reason` is a stable UPPER_SNAKE identifier for clients
    (google.rpc.ErrorInfo.reason); `metadata` carries the ids involved."""

    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgument(TrainforgeError):
    """The request is malformed; `violations` lists every problem found, not just the first."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation] | FieldViolation, message: str | None = None, **kw):
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}", **kw)

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(TrainforgeError):
    reason = "NOT_FOUND"


class AlreadyExists(TrainforgeError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(TrainforgeError):
    reason = "FAILED_PRECONDITION"


class Aborted(TrainforgeError):
    """A concurrent change won: typically a stale etag."""

    reason = "ABORTED"


class DataLoss(TrainforgeError):
    """Stored bytes no longer match their recorded digest."""

    reason = "DATA_LOSS"


class Unavailable(TrainforgeError):
    reason = "UNAVAILABLE"


class Unimplemented(TrainforgeError):
    """A capability that a later release builds; the message names it."""

    reason = "UNIMPLEMENTED"

    def __init__(self, capability: str):
        super().__init__(f"{capability} is not available in this release of trainforge yet",
                         metadata={"capability": capability})


class Unauthenticated(TrainforgeError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(TrainforgeError):
    reason = "PERMISSION_DENIED"


class ResourceExhausted(TrainforgeError):
    reason = "RESOURCE_EXHAUSTED"
