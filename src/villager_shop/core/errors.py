"""The one place where exceptions become a one-line message and an exit code.

Library code raises `VillagerError` subclasses (or lets psycopg errors through); the CLI
calls `describe()` and never shows a traceback to a user.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

import psycopg


class VillagerError(Exception):
    """An error with a message meant for the operator."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(VillagerError):
    exit_code = 2


class ServerUnavailable(VillagerError):
    exit_code = 3


class RefusedError(VillagerError):
    """The tool refuses to act because acting would be unsafe (exit 4)."""

    exit_code = 4


class VerificationFailed(VillagerError):
    exit_code = 5


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)


def _known_passwords() -> set[str]:
    """Passwords this process was given (connection URLs and key=value strings in the environment,
    PGPASSWORD). A URL the driver cannot parse (a space in the password, say) is quoted piecemeal in
    its error message, where no pattern can recognise the password: the value itself is removed."""
    found: set[str] = set()
    for name, value in os.environ.items():
        if name == "PGPASSWORD" and value:
            found.add(value)
        elif "://" in value and "@" in value:
            cred = value.split("://", 1)[1].rpartition("@")[0]
            if ":" in cred:
                found.add(cred.split(":", 1)[1])
        elif "password" in value.lower():
            found.update(m.group(2).strip("'\"") for m in _KV_PASSWORD.finditer(value))
    found |= {unquote(p) for p in found}
    return {p for p in found if p}


def scrub(text: str) -> str:
    """Remove passwords from any text that might quote a connection string."""
    for password in sorted(_known_passwords(), key=len, reverse=True):
        text = text.replace(password, "***")
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def after_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is Ctrl-C, or an error raised while handling it: a KeyboardInterrupt raised in
    the middle of a statement leaves its connection busy, and the cleanup's own statement on it
    (a rollback, a record of the step) then fails with "another command is already in progress"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def describe(exc: BaseException) -> tuple[str, int]:
    """Return (one-line message, exit code) for any exception."""
    if isinstance(exc, VillagerError):
        return _one_line(str(exc)), exc.exit_code
    # Subclasses of OperationalError, yet the server is up: a timeout of the database's or role's
    # (or an operator's pg_cancel_backend) ended one statement or transaction.
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return _one_line(f"a statement was cancelled (statement_timeout, or cancelled by an operator): {exc}"), 1
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return _one_line(f"a lock was not granted in time (lock_timeout): {exc}"), 1
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        return _one_line(f"the server ended an idle transaction (idle_in_transaction_session_timeout): {exc}"), 1
    if isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40"):  # transaction rollback:
        # serialization failure, deadlock (psycopg files them under OperationalError; the server is up)
        return _one_line("a transaction conflicted with another's writes (serialization failure or deadlock) and was"
                         f" rolled back; nothing half-done: run the command again to resume: {exc}"), 1
    if isinstance(exc, psycopg.OperationalError):
        return _one_line(f"database unavailable: {exc}"), ServerUnavailable.exit_code
    if isinstance(exc, psycopg.Error):
        diag = getattr(exc, "diag", None)
        state = getattr(diag, "sqlstate", None) or ""
        return _one_line(f"database error{' ' + state if state else ''}: {exc}"), 1
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, OSError):
        return _one_line(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")), 1
    return _one_line(f"internal error ({type(exc).__name__}): {exc}"), 70


def _one_line(message: str) -> str:
    first = " ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    return scrub(first)[:2000]


def debug_enabled() -> bool:
    return os.environ.get("VILLAGER_DEBUG", "") not in ("", "0", "false")


def describe_interrupt(where: str) -> tuple[str, int]:
    """The line for Ctrl-C, `interrupted` followed by where the command stopped (` during …` or
    `: …`), and its exit code; apart from `describe` because it is not an error line."""
    return _one_line(f"interrupted{where}"), describe(KeyboardInterrupt())[1]
