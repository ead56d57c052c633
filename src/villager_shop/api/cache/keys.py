"""The names of the cache's Redis keys, in one place: the Lua scripts, the per-worker copies and the
invalidations must agree on them, and a scope or a prefix is read back out of a key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CATALOG = "catalog"


def params_digest(*parts: object) -> str:
    """A short stable digest of request parameters (free text included) for a key."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Keys:
    """The keys under one prefix (one shop's cache in a shared Redis)."""
    prefix: str

    def value(self, scope: str, generation: str, name: str) -> str:
        """`{prefix}:{scope}:{generation}:{name}`: a value, under the generations it was built at."""
        return f"{self.value_prefix(scope)}{generation}:{name}"

    def value_prefix(self, scope: str) -> str:
        """What the read script puts before the generations it reads to name a value."""
        return f"{self.prefix}:{scope}:"

    def generation(self, scope: str, part: str | None = None) -> str:
        """`{prefix}:gen:{scope}` (every value of the scope), or `{prefix}:gen:{scope}:{part}`."""
        return f"{self.prefix}:gen:{scope}" if part is None else f"{self.prefix}:gen:{scope}:{part}"

    def shown(self, scope: str) -> str:
        """The hash of the products' shown-data numbers of `scope` (see scripts.SHOWN_OK)."""
        return f"{self.prefix}:shown:{scope}"

    def is_shown(self, key: str) -> bool:
        return key.startswith(f"{self.prefix}:shown:")

    def wal(self, scope: str) -> str:
        """The primary's highest WAL position recorded by an invalidation of `scope` (see `Cache.invalidate`)."""
        return f"{self.prefix}:wal:{scope}"

    def scope_of(self, key: str) -> str:
        """The scope of a generation key or a shown hash."""
        return key.removeprefix(f"{self.prefix}:").split(":")[1]
