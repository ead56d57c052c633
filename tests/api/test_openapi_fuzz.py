"""Schemathesis against /openapi.json, in-process (ASGI), bounded: no input makes the server fail
(5xx), and the answers conform to the documented schema. Requests carry an admin's token so that
the write endpoints are exercised past authentication. Each generated test gets its own database
and app instance (behind a delegating ASGI callable, since the schema is loaded at collection)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import GITA, ShopDb, forget_keys, make_config
from villager_shop.api import security
from villager_shop.api.main import create_app

MAX_EXAMPLES = int(os.environ.get("VILLAGER_FUZZ_EXAMPLES", "25"))


class Delegate:
    """An ASGI app that forwards to the app of the running test."""

    def __init__(self) -> None:
        self.app: Any = create_app(make_config("postgresql:///unused", None))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


TARGET = Delegate()
schema = schemathesis.openapi.from_dict(TARGET.app.openapi())
schema.app = TARGET


@pytest.fixture
def fuzz_headers(shop_db: ShopDb, redis_url: str) -> Iterator[dict[str, str]]:
    config = make_config(shop_db.url, redis_url)
    with psycopg.connect(shop_db.url) as conn:
        row = conn.execute("SELECT u.id, c.token_version FROM users u JOIN villager_service.credentials c"
                           " ON c.user_id = u.id WHERE u.email = %s", (GITA,)).fetchone()
    assert row is not None
    TARGET.app = create_app(config)
    yield {"Authorization": f"Bearer {security.create_token(row[0], row[1], config.jwt_secret, 600)}"}
    forget_keys(config)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_input_makes_the_server_fail(case: schemathesis.Case, fuzz_headers: dict[str, str]) -> None:
    # Contract checks; not "schema-valid data is accepted": a well-formed but unknown cursor, a
    # null for a non-nullable column or an unknown category slug are rightly refused with 4xx.
    case.call_and_validate(headers=fuzz_headers, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
        negative_data_rejection])


def test_each_fuzzed_operation_is_reported_as_a_test_of_its_own() -> None:
    """pytest's progress and its reports count tests by id: one id per operation, or they undercount."""
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          f"{__file__}::test_no_input_makes_the_server_fail"],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    ids = [ln for ln in res.stdout.splitlines() if "::test_no_input_makes_the_server_fail" in ln]
    operations = [op.ok().label for op in schema.get_all_operations()]
    assert len(operations) > 10, operations
    assert sorted(ids) == sorted(f"tests/api/test_openapi_fuzz.py::test_no_input_makes_the_server_fail[{op}]"
                                 for op in operations), res.stdout[-2000:] + res.stderr[-2000:]
