"""Errors the services raise for HTTP; `main.py` turns them (and database errors) into responses."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 400

    def __init__(self, detail: Any, *, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers = headers


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self, detail: Any = "not authenticated") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Invalid(ApiError):
    status = 422


def clean_text(value: str | None, what: str) -> str | None:
    """Reject text PostgreSQL cannot store (NUL) or encode (lone surrogates): 422, not 500."""
    if value is None:
        return None
    if "\x00" in value:
        raise Invalid(f"{what}: NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{what}: not valid Unicode text") from None
    return value
