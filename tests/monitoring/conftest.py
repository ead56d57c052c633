"""The service fixtures of tests/api (a migrated database per test, copied from a session template)."""

from tests.api.conftest import anyio_backend, file_migrating_template, migrating_template, shop_db  # noqa: F401
