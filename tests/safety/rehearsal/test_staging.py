"""The staging database's name: the one database the rehearsal drops must never be production."""

from __future__ import annotations

import pytest

from villager_shop.core.errors import RefusedError
from villager_shop.safety.rehearsal.staging import check_staging_name, staging_name


def test_staging_name_that_is_the_live_database_is_refused() -> None:
    stamp = "20260101_120000"
    live = "x" * 39 + f"_staging_{stamp}"  # 63 bytes: the derived name cuts the base back to itself
    assert staging_name(live, stamp) == live
    with pytest.raises(RefusedError, match="live database"):
        check_staging_name(live, staging_name(live, stamp))
    for bad in ("postgres", "shop_copy", "shop_staging_", "shop_staging_2026"):
        with pytest.raises(RefusedError):
            check_staging_name("shop", bad)
    ok = staging_name("shop", stamp)
    assert ok == f"shop_staging_{stamp}"
    check_staging_name("shop", ok)
    long_live = "s" * 63
    assert len(staging_name(long_live, stamp).encode()) <= 63
    check_staging_name(long_live, staging_name(long_live, stamp))
