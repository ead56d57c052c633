"""The service fixtures of tests/api (a migrated database per test, copied from a session template)."""

from tests.api.conftest import anyio_backend, migrating_template, shop_db  # noqa: F401
