"""The staging copy the rehearsal runs on: its name, the backup restored into it, and what happens
to it afterwards.

Staging is restored into, migrated and dropped WITH (FORCE), so its name is checked to differ from
the live database and to carry the staging suffix; or, where VILLAGER_SCRATCH_URL says when the
role may not create databases, it is the empty database that URL names, emptied afterwards
(safety.scratch)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from villager_shop.core.db import connection
from villager_shop.core.errors import RefusedError
from villager_shop.safety import dbops, manifest
from villager_shop.safety.backup import create_backup, restore_into
from villager_shop.safety.manifest import BackupEntry
from villager_shop.safety.rehearsal.timeline import Say, phase, quiet
from villager_shop.safety.report.model import Span
from villager_shop.safety.restore import PROTECTED
from villager_shop.safety.scratch import VARIABLE, Scratch, ScratchPlan, scratch_database

STAMP_FORMAT = "%Y%m%d_%H%M%S"
STAGING_SUFFIX = re.compile(r"_staging_\d{8}_\d{6}$")


def staging_name(live: str, stamp: str) -> str:
    """`<live>_staging_<stamp>`, the live name cut so the whole fits in 63 bytes."""
    return dbops.derived_name(live, f"_staging_{stamp}")


def check_staging_name(live: str, staging: str) -> None:
    """Refuse any staging name that could be production (or a system database): staging is
    restored into, migrated, and dropped WITH (FORCE)."""
    if staging == live:
        raise RefusedError(f"refusing to rehearse: the staging database name {staging!r} is the live database's; "
                           "rename the live database or retry in a second")
    if staging in PROTECTED:
        raise RefusedError(f"refusing to use {staging!r} as a staging database")
    if not STAGING_SUFFIX.search(staging):
        raise RefusedError(f"refusing to use {staging!r} as a staging database: it does not end with "
                           "_staging_<YYYYMMDD_HHMMSS>")


def choose_backup(url: str, backup_dir: Path, backup_id: str | None, live: str,
                  say: Say = quiet) -> tuple[BackupEntry, bool]:
    """The named backup, else the newest of this database in the manifest, else a new one."""
    if backup_id:
        entry = manifest.find(backup_dir, backup_id)
    else:
        mine = [e for e in manifest.load(backup_dir) if e.database == live]
        if mine:
            entry = max(mine, key=lambda e: (e.snapshot_at, e.id))
            say(f"using the newest backup of {live}: {entry.id} (snapshot {entry.snapshot_at})")
        else:
            say(f"no backup of {live} in {backup_dir}: creating one")
            return create_backup(url, backup_dir, say=say), True
    if entry.database != live:
        raise RefusedError(f"backup {entry.id} is of database {entry.database!r}, not of {live!r}: "
                           "its projection and its rehearsal would be about another database")
    return entry, False


@contextmanager
def restored_staging(where: ScratchPlan, staging: str, live: str, entry: BackupEntry, archive: Path, *, keep: bool,
                     phases: list[Span], say: Say) -> Iterator[Scratch]:
    """Staging with the backup restored and analyzed, dropped (or emptied) afterwards unless `keep`:
    created under the checked staging name or, with VILLAGER_SCRATCH_URL naming an empty database,
    that database."""
    with scratch_database(where, staging, live, keep=keep, what="staging", say=say) as target:
        with phase(phases, "restore into staging", say):
            restore_into(entry, archive, target.url, target.server_major, say, no_owner=where.provided)
            with connection(target.url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        yield target


def kept_note(where: ScratchPlan, staging: str, keep: bool) -> str | None:
    """What the operator must do with a staging database kept by --keep."""
    if keep and where.create:
        return f'staging database {staging} kept (--keep): drop it with DROP DATABASE "{staging}" WITH (FORCE)'
    if keep:
        return f"staging database {staging} ({VARIABLE}) kept (--keep): empty it before it serves again"
    return None
