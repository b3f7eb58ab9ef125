"""The one error hierarchy. The HTTP status and CLI exit code live on the class."""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExistsError",
    "ConcurrentChangeError",
    "ConflictError",
    "EnvironmentMismatchError",
    "GateFailedError",
    "IntegrityError",
    "InvalidInputError",
    "NotFoundError",
    "NotReadyError",
    "OwnloopError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "SchemaOutOfDateError",
    "StoreUnavailableError",
    "UnsafeFormatError",
]


class OwnloopError(Exception):
    """Root of every error ownloop raises on purpose; the message says what to do next."""

    http_status = 400
    exit_code = 1
    code = "error"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def to_dict(self) -> dict[str, str]:
        """The one JSON error shape: ``{"error": message, "code": code}``."""
        return {"error": self.message, "code": self.code}


class InvalidInputError(OwnloopError):
    """The caller gave a value ownloop cannot use (bad name, wrong columns, bad file)."""

    code = "invalid_input"


class UnsafeFormatError(InvalidInputError):
    """The file would run code when loaded (pickle) and nobody opted in."""

    code = "unsafe_format"


class PayloadTooLargeError(InvalidInputError):
    """A request body (after decompression) is larger than the configured limit."""

    http_status = 413
    code = "payload_too_large"


class NotFoundError(OwnloopError):
    http_status = 404
    code = "not_found"


class AlreadyExistsError(OwnloopError):
    http_status = 409
    code = "already_exists"


class ConflictError(OwnloopError):
    """The request is valid but the current state does not allow it."""

    http_status = 409
    code = "conflict"


class ConcurrentChangeError(ConflictError):
    """Another request changed the same rows at the same moment; nothing was written, try again."""

    code = "concurrent_change"
    retriable = True


class GateFailedError(ConflictError):
    code = "gate_failed"


class EnvironmentMismatchError(ConflictError):
    """A version needs a library (or library version) this environment does not have.

    ``mismatches`` holds every difference found (``ownloop.needs.Mismatch``), refused or not.
    """

    code = "environment_mismatch"

    def __init__(self, message: str, *, mismatches: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.mismatches = mismatches


class PermissionDeniedError(OwnloopError):
    http_status = 403
    code = "permission_denied"


class AuthenticationError(OwnloopError):
    """No credentials where they are required, or credentials that are unknown, expired or revoked."""

    http_status = 401
    code = "unauthenticated"


class StoreUnavailableError(OwnloopError):
    http_status = 503
    code = "store_unavailable"


class SchemaOutOfDateError(StoreUnavailableError):
    code = "schema_out_of_date"


class IntegrityError(OwnloopError):
    """An artifact on disk no longer matches the digest recorded for it."""

    http_status = 503
    code = "integrity"


class NotReadyError(OwnloopError):
    """The thing exists but cannot serve now (e.g. its artifact failed its digest check)."""

    http_status = 503
    code = "not_ready"
