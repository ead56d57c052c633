"""Client-tool rules that need no server: binary choice, password handling, tolerated restore errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from villager_shop.core.errors import VillagerError
from villager_shop.safety import pgtools
from villager_shop.safety.restore import _split_guc_list


def test_server_newer_than_bundled_pg_dump_names_what_is_needed(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(pgtools, "SYSTEM_PG_ROOT", tmp_path)
    with pytest.raises(VillagerError) as err:
        pgtools.choose_binary("pg_dump", 99)
    message = str(err.value)
    assert "pg_dump 99" in message and str(tmp_path / "99" / "bin" / "pg_dump") in message
    assert pgtools.choose_binary("pg_dump", 13) == pgtools.embedded_binary("pg_dump")


def test_password_goes_to_environment_not_conninfo() -> None:
    conninfo, env = pgtools.libpq_target("postgresql://shop:s3cret@db.example:5433/villager?sslmode=prefer")
    assert "s3cret" not in conninfo and "db.example" in conninfo and "5433" in conninfo
    assert env["PGPASSWORD"] == "s3cret"


def test_only_unknown_set_parameters_are_tolerated() -> None:
    stderr = (
        'pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter '
        '"transaction_timeout"\nCommand was: SET transaction_timeout = 0;\n'
        'pg_restore: error: could not execute query: ERROR:  relation "users" already exists\n'
        "Command was: CREATE TABLE public.users (\n"
        "pg_restore: warning: errors ignored on restore: 2\n"
    )
    fatal, tolerated = pgtools.restore_errors(stderr)
    assert len(tolerated) == 1 and fatal == ['ERROR:  relation "users" already exists']


def test_list_settings_are_split_like_pg_dump() -> None:
    assert _split_guc_list('"$user", public, "Odd ""Name"""') == ["$user", "public", 'Odd "Name"']
