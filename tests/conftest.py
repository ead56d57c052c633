"""Fixtures: every test gets its own database on a real server (embedded PG 18 by default,
or the server named by DATABASE_URL), and a real Redis (embedded or REDIS_URL)."""

from __future__ import annotations

import faulthandler
import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

# pytest-timeout (signal) fails a test after 300 s; a hang that signal cannot break (seen once:
# an event loop's shutdown waiting on a task) would stall CI for good. This watchdog prints every
# thread's stack and ends the run instead.
WATCHDOG_S = 420


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()

warnings.filterwarnings("ignore", module="platformdirs")

from tests.helpers import TEST_DATA_ROOT  # noqa: E402
from tests.pgbouncer import PgBouncer, pgbouncer_binary  # noqa: E402
from villager_shop.core.db import create_database, drop_database  # noqa: E402
from villager_shop.embedded.postgres import EmbeddedPostgres  # noqa: E402
from villager_shop.embedded.redis import EmbeddedRedis  # noqa: E402
from villager_shop.embedded.replica import StreamingPair, bindir_of  # noqa: E402
from villager_shop.legacy.schema import schema_sql  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _stop_embedded_servers_this_session_started() -> Iterator[None]:
    """Embedded test servers (started by fixtures or by CLI subprocesses) that were not running when
    the session began are stopped at its end; ones already running are left as they were."""
    pg, rd = EmbeddedPostgres(TEST_DATA_ROOT), EmbeddedRedis(TEST_DATA_ROOT)
    pg_was, rd_was = pg.is_ready(), rd.ping()
    yield
    if not rd_was:
        rd.stop()
    if not pg_was:
        pg.stop()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """A URL to a maintenance database on the server under test."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return EmbeddedPostgres(TEST_DATA_ROOT).start()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    return EmbeddedRedis(TEST_DATA_ROOT).start()


@pytest.fixture(scope="session")
def pgbouncer(pg_admin_url: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of the server under test (skipped where the
    Debian package is not installed: `.ci/run` installs it)."""
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    bouncer = PgBouncer(pg_admin_url).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def streaming_pair(pg_admin_url: str) -> Iterator[StreamingPair]:
    """A primary and a streaming standby of the version under test (its own binaries)."""
    bindir = bindir_of(pg_admin_url)
    if bindir is None:
        pytest.skip("the binaries of the server under test (pg_basebackup, initdb) were not found")
    pair = StreamingPair(bindir).start()
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def replicated_legacy_db(streaming_pair: StreamingPair) -> Iterator[Any]:
    """Factory: a database on the pair's primary with generated legacy data at `scale`."""
    from villager_shop.legacy.generate import generate

    admin = streaming_pair.primary_url()
    made: list[str] = []

    def make(scale: float = 0.1, seed: int = 1) -> str:
        name, url = _new_db(admin)
        made.append(name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(schema_sql().encode())
        generate(url, scale=scale, seed=seed)
        streaming_pair.wait_caught_up()
        return url

    yield make
    for name in made:
        drop_database(admin, name)


@pytest.fixture(scope="session")
def server_version(pg_admin_url: str) -> int:
    with psycopg.connect(pg_admin_url) as conn:
        return int(conn.info.server_version)


def _new_db(admin_url: str, template: str | None = None) -> tuple[str, str]:
    name = f"vt_{uuid.uuid4().hex[:12]}"
    return name, create_database(admin_url, name, template=template)


@pytest.fixture
def fresh_db(pg_admin_url: str) -> Iterator[str]:
    """An empty database, dropped after the test."""
    name, url = _new_db(pg_admin_url)
    try:
        yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def legacy_db(fresh_db: str) -> str:
    """An empty database holding exactly the legacy schema."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(schema_sql().encode())
    return fresh_db




_TEMPLATES: dict[tuple[float, int], str] = {}


@pytest.fixture(scope="session")
def _template_names(pg_admin_url: str) -> Iterator[dict[tuple[float, int], str]]:
    yield _TEMPLATES
    for name in _TEMPLATES.values():
        drop_database(pg_admin_url, name)


@pytest.fixture
def make_legacy_db(pg_admin_url: str, _template_names: dict[tuple[float, int], str]) -> Iterator[Any]:
    """Factory: a fresh database with the legacy schema filled by the generator at `scale`
    (generated once per session into a template, then copied per test)."""
    from villager_shop.legacy.generate import generate

    made: list[str] = []

    def make(scale: float = 0.05, seed: int = 1) -> str:
        key = (scale, seed)
        if key not in _template_names:
            name, url = _new_db(pg_admin_url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(schema_sql().encode())
            generate(url, scale=scale, seed=seed)
            _template_names[key] = name
        name, url = _new_db(pg_admin_url, template=_template_names[key])
        made.append(name)
        return url

    yield make
    for name in made:
        drop_database(pg_admin_url, name)
