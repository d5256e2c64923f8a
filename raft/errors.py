"""Errors a store write can end with; each maps to one HTTP status in the API."""


class StoreError(Exception):
    status = 500
    code = "store_error"


class ConflictError(StoreError):
    """The object changed since the caller read it (optimistic concurrency)."""
    status = 409
    code = "conflict"


class ExistsError(StoreError):
    status = 409
    code = "exists"


class NotFoundError(StoreError):
    status = 404
    code = "not_found"


class NotLeaderError(StoreError):
    status = 503
    code = "not_leader"


class UnavailableError(StoreError):
    """The write's outcome is unknown or Raft could not take it (no quorum, queue full)."""
    status = 503
    code = "unavailable"


ERRORS_BY_CODE = {cls.code: cls for cls in (ConflictError, ExistsError, NotFoundError,
                                             NotLeaderError, UnavailableError, StoreError)}
