"""What `complete` drops comes from the plan's steps: each one's complete part, in plan order, in
one transaction. (The command itself, on a database, is tested in test_lifecycle.py.)"""

from __future__ import annotations

from villager_shop.migration.complete import cut_statements, legacy_columns
from villager_shop.migration.plan import build_plan
from villager_shop.migration.steps.sync_triggers import TRIGGERS

LEGACY = (("users", "house_number"), ("shops", "house_number"), ("products", "category"),
          ("products", "price"), ("products", "stock"))


def test_the_legacy_columns_are_those_the_steps_contract() -> None:
    assert legacy_columns() == LEGACY
    owners = {s.name: s.contracts() for s in build_plan() if s.contracts()}
    assert owners == {"backfill_users": [LEGACY[0]], "backfill_shops": [LEGACY[1]],
                      "backfill_products": list(LEGACY[2:])}


def test_the_cut_keeps_the_legacy_form_then_drops_the_triggers_then_the_columns() -> None:
    cut = cut_statements(build_plan())
    keep, triggers, columns, integrity = cut[0], cut[1:1 + len(TRIGGERS)], cut[1 + len(TRIGGERS):-1], cut[-1]
    assert keep.startswith("UPDATE villager_migration.quarantine q SET detail = to_jsonb(p) FROM public.products p")
    assert triggers == [f"DROP TRIGGER IF EXISTS {n} ON public.{t}" for n, t, *_ in TRIGGERS]
    assert columns == [f"ALTER TABLE public.{t} DROP COLUMN IF EXISTS {c}" for t, c in LEGACY]
    assert "CREATE OR REPLACE FUNCTION public.check_data_integrity()" in integrity
