"""The names the catalog's notification triggers and the shop service agree on. The migration
installs the triggers and the service listens and sets the session flag; neither depends on the
other, so the names live below both."""

from __future__ import annotations

# Every statement that changes the catalog notifies this channel at commit (the migration's
# catalog_notify step); each shop service worker listens to it and invalidates its cache.
CATALOG_CHANNEL = "villager_catalog"

# The tables the shop service writes itself and invalidates finely for: the triggers stay silent
# for its sessions there, which turn this setting on.
SELF_INVALIDATED = ("products", "product_variants")
SELF_INVALIDATING_SESSION = "villager.invalidates_cache"
