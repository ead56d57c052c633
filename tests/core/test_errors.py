"""Ctrl-C in the middle of a statement leaves its connection busy: the cleanup's own statement on
it then fails, and that failure is reported as the interrupt it follows, not as a database error."""

from __future__ import annotations

import psycopg
import pytest

from villager_shop.core.errors import after_interrupt, describe


def _busy(url: str) -> psycopg.Connection:
    """A connection with a statement sent and its result not read yet."""
    conn = psycopg.connect(url, autocommit=True)
    conn.pgconn.send_query(b"SELECT pg_sleep(0.2)")
    return conn


def test_an_error_of_the_cleanup_after_ctrl_c_is_the_interrupt(fresh_db: str) -> None:
    conn = _busy(fresh_db)
    try:
        with pytest.raises(psycopg.OperationalError) as caught:
            try:
                raise KeyboardInterrupt  # Ctrl-C lands while the statement is under way
            finally:
                conn.execute("SELECT 1")  # the cleanup's statement on the same connection
    finally:
        conn.close()
    assert "another command is already in progress" in str(caught.value)
    assert after_interrupt(caught.value)
    assert describe(caught.value)[1] != 130  # what it would have been reported as, alone

    conn = _busy(fresh_db)
    try:
        with pytest.raises(psycopg.OperationalError) as plain:
            conn.execute("SELECT 1")
    finally:
        conn.close()
    assert not after_interrupt(plain.value)
