"""sql: the operator's own statements (pgroll's `sql` operation), for what the generic operations do
not express: a view over the new tables, a notification trigger, a grant. `up` runs in one
transaction with `check`, under the run's lock timeout with retries, once the plan's new tables,
columns and sync triggers exist and before the backfills: when `check` does not hold, none of `up`
stays and the run stops there. `down` is run by rollback (before the plan's own objects go) and `complete` by
complete (before the legacy columns go), each in that command's one transaction."""

from __future__ import annotations

from typing import Any

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.planfile.operations.base import Env, Parts
from villager_shop.migration.planfile.spec import RawSql
from villager_shop.migration.steps.base import Step


class SqlStep(Step):
    phase = "sync"

    def __init__(self, op: RawSql) -> None:
        self.op = op
        self.name = f"sql_{op.name}"[:63]
        self.title = f"the plan's own SQL {op.name}"
        self.held = op.locks or "as its statements take them (the run's lock timeout applies)"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(self.op.up, self.held)]

    def apply(self, ctx: Context) -> dict[str, Any]:
        # The check in `up`'s own transaction: when it does not hold, nothing of `up` stays, and
        # the resumed run (once the cause is fixed) runs it again from a clean slate.
        guard = (f"DO $villager_check$ BEGIN IF NOT coalesce(({self.op.check}), false) THEN RAISE EXCEPTION"
                 f" 'sql operation {self.op.name}: check does not hold after up (nothing of it was kept)'; END IF;"
                 " END $villager_check$")
        return {"attempts": ctx.run(Ddl(f"{self.op.up.rstrip().rstrip(';')};\n{guard}", self.held), self.name)}

    def undo_ddl(self) -> list[Ddl]:
        return [Ddl(self.op.down, self.held)] if self.op.down else []

    def complete_ddl(self) -> list[Ddl]:
        return [Ddl(self.op.complete, self.held)] if self.op.complete else []

    def check(self, ctx: Context) -> bool:
        return bool(ctx.scalar(f"SELECT coalesce(({self.op.check}), false)"))


def expand(op: RawSql, env: Env) -> Parts:
    parts = Parts()
    parts.hooks.append(SqlStep(op))
    return parts
