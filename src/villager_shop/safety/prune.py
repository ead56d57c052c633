"""`backup prune`: which backups go, so the backups folder does not grow without bound.

Each database's backups are judged apart (one folder may hold the shop's and a demo's): the newest
`keep` stay, and so does the newest one `backup verify` proved, whatever its age, since it is the one
known to restore. With `older_than_days`, only backups older than that may go. The choice is a pure
function of the manifest (`plan_prune`), so a dry run shows exactly what a real run removes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from villager_shop.core.errors import ConfigError
from villager_shop.safety import manifest
from villager_shop.safety.manifest import BackupEntry

DEFAULT_KEEP = 3


@dataclass(frozen=True)
class PrunePlan:
    remove: list[BackupEntry]
    keep: list[tuple[BackupEntry, str]]  # each kept backup with why it stays

    @property
    def freed_bytes(self) -> int:
        return sum(e.size for e in self.remove)


def _created(entry: BackupEntry) -> datetime:
    return datetime.fromisoformat(entry.created_at).astimezone(UTC)


def plan_prune(entries: list[BackupEntry], *, keep: int = DEFAULT_KEEP, older_than_days: float | None = None,
               now: datetime | None = None) -> PrunePlan:
    """What a prune removes and what it keeps (and why), oldest first in both lists."""
    if keep < 0:
        raise ConfigError("--keep must be 0 or more")
    if older_than_days is not None and older_than_days < 0:
        raise ConfigError("--older-than must be 0 days or more")
    now = now or datetime.now(UTC)
    # Creation times have whole seconds: backups made within one second are ordered as the manifest
    # lists them, which is the order they were recorded in.
    position = {e.id: i for i, e in enumerate(entries)}

    def age(e: BackupEntry) -> tuple[datetime, int]:
        return _created(e), position[e.id]

    by_database: dict[str, list[BackupEntry]] = defaultdict(list)
    for e in entries:
        by_database[e.database].append(e)
    why: dict[str, str] = {}
    for database, group in by_database.items():
        newest_first = sorted(group, key=age, reverse=True)
        for e in newest_first[:keep]:
            why[e.id] = f"one of the newest {keep} of {database}"
        verified = next((e for e in newest_first if e.verified_at), None)
        if verified is not None and verified.id not in why:
            why[verified.id] = f"the newest verified backup of {database}"
        if older_than_days is not None:
            cutoff = now - timedelta(days=older_than_days)
            for e in group:
                if e.id not in why and _created(e) >= cutoff:
                    why[e.id] = f"younger than {older_than_days:g} days"
    ordered = sorted(entries, key=age)
    return PrunePlan(remove=[e for e in ordered if e.id not in why],
                     keep=[(e, why[e.id]) for e in ordered if e.id in why])


def prune_backups(backup_dir: Path, *, keep: int = DEFAULT_KEEP, older_than_days: float | None = None,
                  dry_run: bool = False) -> PrunePlan:
    """Remove the backups `plan_prune` picks from the manifest and the disk (nothing with `dry_run`)."""
    plan = plan_prune(manifest.load(backup_dir), keep=keep, older_than_days=older_than_days)
    if not dry_run and plan.remove:
        manifest.remove(backup_dir, {e.id for e in plan.remove})
    return plan
