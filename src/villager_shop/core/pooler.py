"""Is a connection URL a transaction pooler? (PgBouncer in transaction or statement mode, and the
poolers of managed PostgreSQL.)

Behind such a pooler, consecutive transactions of one client may run on different server
connections, and the next client inherits whatever a server connection was left with. So nothing
that outlives a transaction may be used there: session settings, session advisory locks, named
prepared statements, LISTEN, temporary tables. A session pooler (one server connection per client
for the client's lifetime, reset on release) behaves like the server itself and is not one.

The test: two clients of the URL take turns running one-statement transactions. On the server
itself (or a session pooler) each client keeps its own backend, and the two differ. Behind a
transaction pooler the two share a backend (an idle server connection goes to whoever asks next)
or a client changes backend between its own transactions."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from villager_shop.core.errors import ServerUnavailable
from villager_shop.core.urls import mask_url

ROUNDS = 3
_known: dict[str, bool] = {}
_guard = threading.Lock()


def shares_server_connections(url: str, *, connect_timeout: int = 5) -> bool:
    """True when `url` is a transaction (or statement) pooler. Probed once per URL and process."""
    with _guard:
        if url in _known:
            return _known[url]
    shared = _probe(url, connect_timeout)
    with _guard:
        _known[url] = shared
    return shared


def _probe(url: str, connect_timeout: int) -> bool:
    # prepare_threshold=None: never a named prepared statement, which a pooler would hand on.
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": connect_timeout, "prepare_threshold": None,
                              "application_name": "villager-shop pooler probe"}
    one: psycopg.Connection[Any] | None = None
    try:
        one = psycopg.connect(url, **kwargs)
        two = psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        if one is not None:
            one.close()
        reason = str(exc).strip().splitlines()[0].rsplit(" failed: ", 1)[-1] if str(exc).strip() else "no answer"
        raise ServerUnavailable(f"cannot connect to {mask_url(url)}: {reason}") from exc
    with one, two:
        seen: tuple[set[int], set[int]] = (set(), set())
        for _ in range(ROUNDS):
            for n, conn in enumerate((one, two)):
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                seen[n].add(int(row[0]) if row else 0)
    return len(seen[0]) > 1 or len(seen[1]) > 1 or bool(seen[0] & seen[1])
