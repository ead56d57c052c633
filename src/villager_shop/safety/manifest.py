"""The backups manifest: the one record of what each backup file is.

Why: the guide restores `backup_$(date …)`, a name built from *today's* date, so the file never exists
(SPEC defect 6). Here a restore names a backup by the id recorded when it was taken, with its checksum,
snapshot time and WAL position, so we can refuse a damaged file and say what a restore would lose.

The manifest is `manifest.json` in the backups folder, rewritten atomically (temp file, fsync, rename)
under an exclusive lock, so a crash or two concurrent `backup create` never leave it half-written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from villager_shop.core.errors import VerificationFailed, VillagerError

MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
FORMAT_VERSION = 1


@dataclass
class BackupEntry:
    id: str
    file: str  # name inside the backups folder (the folder can be moved as a whole)
    sha256: str
    size: int
    created_at: str  # = started_at; the name scripts expect
    started_at: str
    finished_at: str
    snapshot_at: str  # server clock at the dump's snapshot: rows written later are not in the backup
    lsn: str  # WAL position at the snapshot
    database: str
    server: str  # masked URL, for people
    server_version: str
    server_version_num: int
    pg_dump_version: int
    database_size: int
    row_counts: dict[str, int] = field(default_factory=dict)
    format: str = "custom"
    # When `backup verify` last proved it restores (None: never). Pruning keeps the newest verified
    # backup of each database whatever else it removes: it is the one known to work.
    verified_at: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupEntry:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_dir(backup_dir: Path) -> Path:
    """Create the backups folder readable by its owner only: dumps hold every row of the shop."""
    backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return backup_dir


@contextlib.contextmanager
def locked(backup_dir: Path) -> Iterator[None]:
    ensure_dir(backup_dir)
    with open(backup_dir / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load(backup_dir: Path) -> list[BackupEntry]:
    path = backup_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise VillagerError(f"cannot read the backups manifest {path}: {exc}") from exc
    try:
        return [BackupEntry.from_dict(e) for e in data.get("backups", [])]
    except TypeError as exc:
        raise VillagerError(f"the backups manifest {path} is malformed: {exc}") from exc


def _write(backup_dir: Path, entries: list[BackupEntry]) -> None:
    payload = json.dumps({"format": FORMAT_VERSION, "backups": [e.to_dict() for e in entries]}, indent=2)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=backup_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, backup_dir / MANIFEST)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(backup_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def add(backup_dir: Path, entry: BackupEntry) -> None:
    with locked(backup_dir):
        entries = load(backup_dir)
        if any(e.id == entry.id for e in entries):
            raise VillagerError(f"backup id {entry.id} is already in the manifest")
        _write(backup_dir, [*entries, entry])


def mark_verified(backup_dir: Path, backup_id: str, when: str) -> BackupEntry:
    """Record that the backup `backup_id` was proven to restore at `when`; returns the updated entry."""
    with locked(backup_dir):
        entries = load(backup_dir)
        found = [e for e in entries if e.id == backup_id]
        if not found:
            raise VillagerError(f"backup {backup_id} left the manifest while it was being verified")
        found[0].verified_at = when
        _write(backup_dir, entries)
        return found[0]


def remove(backup_dir: Path, backup_ids: set[str]) -> list[BackupEntry]:
    """Take these backups out of the manifest, then delete their files; returns the entries removed
    (ids no longer in the manifest are skipped). The manifest goes first: a crash in between leaves a
    file nobody points to, never an entry whose file is gone."""
    with locked(backup_dir):
        entries = load(backup_dir)
        gone = [e for e in entries if e.id in backup_ids]
        if gone:
            _write(backup_dir, [e for e in entries if e.id not in backup_ids])
        for e in gone:
            (backup_dir / e.file).unlink(missing_ok=True)
    return gone


def find(backup_dir: Path, backup_id: str) -> BackupEntry:
    """The entry with this id (or a unique prefix of one)."""
    entries = load(backup_dir)
    exact = [e for e in entries if e.id == backup_id]
    matches = exact or ([e for e in entries if e.id.startswith(backup_id)] if backup_id else [])
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise VillagerError(
            f"unknown backup id {backup_id!r} in {backup_dir / MANIFEST} ({len(entries)} known; "
            "see `villager-shop backup list`)"
        )
    raise VillagerError(f"backup id prefix {backup_id!r} is ambiguous ({len(matches)} backups match)")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_file(backup_dir: Path, entry: BackupEntry) -> Path:
    """The backup's file, after proving it is byte-for-byte the one that was recorded."""
    path = backup_dir / entry.file
    if not path.is_file():
        raise VerificationFailed(f"backup {entry.id}: file {path} is missing")
    size = path.stat().st_size
    if size != entry.size:
        raise VerificationFailed(f"backup {entry.id}: {path} is {size} bytes, the manifest says {entry.size}")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise VerificationFailed(
            f"backup {entry.id}: checksum mismatch, {path} has sha256 {actual[:16]}…, "
            f"the manifest says {entry.sha256[:16]}… (the file is damaged or was replaced)"
        )
    return path
