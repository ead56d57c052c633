"""A worker's own copies of cached values, so that a hit costs no Redis round trip for the value.

A copy is kept with what it depends on (its generations and, for a value that lists products, the
shown epoch and those products' numbers) and the Redis entry's expiry; least recently used copies
go first once their bodies pass a byte budget. Which copies may be answered without asking Redis
(trusted, while the lease runs) is decided by the store; this module only keeps the set."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from villager_shop.api.cache.scripts import Fields

Dependency = str | tuple[str, str]  # a generation key, or (shown hash, product)


@dataclass(frozen=True)
class Copy:
    """A worker's own copy of a value: valid while its generations (and, for a value that shows
    products, the shown epoch and those products' fields) are what Redis holds now."""
    gens: tuple[bytes, ...]
    epoch: bytes | None
    fields: Fields
    expires: float  # monotonic; the Redis entry's expiry
    body: bytes
    # what the per-request check compares: (shown hash, product) keys and their recorded values
    field_keys: tuple[tuple[str, str], ...] = ()
    field_values: tuple[bytes, ...] = ()
    keys: tuple[str, ...] = ()  # the generation keys of `gens`

    @classmethod
    def of(cls, shown: str, keys: Sequence[str], generation: bytes, epoch: bytes | None, fields: Fields,
           ttl_ms: int, body: bytes) -> Copy:
        """The copy of a value read or stored at `generation` (the generations joined by '.'),
        `shown` being its scope's shown hash."""
        return cls(tuple(generation.split(b".")), epoch, fields, time.monotonic() + ttl_ms / 1000, body,
                   tuple((shown, f) for f, _ in fields), tuple(g for _, g in fields), tuple(keys))

    def dependencies(self) -> list[Dependency]:
        return [*self.keys, *self.field_keys]


class Copies:
    """The copies by scope and name (the latest one of each), least recently used first; at most
    `max_bytes` of bodies."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._copies: OrderedDict[str, Copy] = OrderedDict()
        self._size = 0
        # Those of the copies that may be answered without asking Redis while the lease runs.
        self._trusted: set[str] = set()
        # generation key or (shown hash, product) -> the copies that depend on it
        self._dependents: dict[Dependency, set[str]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._copies

    def __iter__(self) -> Iterator[str]:
        return iter(self._copies)

    def get(self, key: str) -> Copy | None:
        """The copy, unless the Redis entry it copies has expired; it becomes the most recently used."""
        copy = self._copies.get(key)
        if copy is None:
            return None
        if time.monotonic() >= copy.expires:  # the Redis entry has expired too
            self.forget(key)
            return None
        self._copies.move_to_end(key)
        return copy

    def current(self, key: str) -> Copy | None:
        """The copy kept now, whatever its age, without using it."""
        return self._copies.get(key)

    def put(self, key: str, copy: Copy, ttl_ms: int, *, trusted: bool) -> None:
        if self.max_bytes <= 0 or ttl_ms <= 0 or len(copy.body) > self.max_bytes // 4:
            return
        self.forget(key)
        self._copies[key] = copy
        self._size += len(copy.body)
        for dependency in copy.dependencies():
            self._dependents.setdefault(dependency, set()).add(key)
        if trusted:
            self._trusted.add(key)
        while self._size > self.max_bytes:
            self.forget(next(iter(self._copies)))

    def is_trusted(self, key: str) -> bool:
        return key in self._trusted

    def trust(self, key: str) -> None:
        self._trusted.add(key)

    def untrust_all(self) -> None:
        self._trusted.clear()

    def forget(self, key: str) -> None:
        copy = self._copies.pop(key, None)
        if copy is None:
            return
        self._trusted.discard(key)
        self._size -= len(copy.body)
        for dependency in copy.dependencies():
            dependents = self._dependents.get(dependency)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[dependency]

    def drop(self, keys: set[str], fields: set[tuple[str, str]]) -> None:
        """Forget the copies that depend on one of `keys` (generation keys) or `fields` ((shown
        hash, product)); empty sets: forget every copy."""
        if not keys and not fields:
            for key in list(self._copies):
                self.forget(key)
            return
        dependencies: list[Dependency] = [*keys, *fields]
        for dependency in dependencies:
            for key in list(self._dependents.get(dependency, ())):
                self.forget(key)


class LocalGenerations:
    """How many times this worker invalidated each generation key or shown hash: a PostgreSQL read
    shared while Redis is skipped is named with them, so that it is never shared across this
    worker's own invalidation."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def bump(self, keys: Iterable[str]) -> None:
        for k in keys:
            self._counts[k] = self._counts.get(k, 0) + 1

    def name(self, scope: str, keys: Sequence[str], shown: str, name: str) -> str:
        gens = ".".join(str(self._counts.get(k, 0)) for k in [*keys, shown])
        return f"local:{scope}:{gens}:{name}"
