"""Telling a transaction pooler from the server itself, on a real PgBouncer."""

from __future__ import annotations

from tests.pgbouncer import PgBouncer
from villager_shop.core.pooler import shares_server_connections


def test_a_transaction_pooler_is_told_from_the_server(fresh_db: str, pgbouncer: PgBouncer) -> None:
    assert shares_server_connections(pgbouncer.pooled(fresh_db)) is True
    assert shares_server_connections(fresh_db) is False


def test_a_session_pooler_is_not_a_transaction_pooler(fresh_db: str, pg_admin_url: str) -> None:
    bouncer = PgBouncer(pg_admin_url, pool_mode="session").start()
    try:
        assert shares_server_connections(bouncer.pooled(fresh_db)) is False
    finally:
        bouncer.stop()
