"""What makes a migration unsafe before it starts, read from the catalog without changing anything.

Row-level security that applies to the migrating role hides rows from every statement the
migration runs as that role: the backfill skips them, the rebuilt copy lacks them, the checks
count without them. The damage shows up far from the cause (a foreign key that cannot be
validated after a swap), so the run refuses up front and says which tables and why.
"""

from __future__ import annotations

from typing import Any

import psycopg

from villager_shop.core.errors import RefusedError
from villager_shop.legacy.schema import LEGACY_TABLES

# RLS applies unless the role is superuser or BYPASSRLS, or owns the table (has its owner's
# privileges) and the table does not FORCE it on its owner.
ROW_SECURITY = """
SELECT format('%%I.%%I', n.nspname, c.relname),
       CASE WHEN c.relforcerowsecurity THEN 'forced on its owner' ELSE 'not the owner' END,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relname = ANY(%s) AND c.relrowsecurity
   AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = current_user AND (r.rolsuper OR r.rolbypassrls))
   AND (c.relforcerowsecurity OR NOT pg_has_role(current_user, c.relowner, 'USAGE'))
 ORDER BY 1
"""


def row_security_in_the_way(conn: psycopg.Connection[Any], tables: tuple[str, ...] = LEGACY_TABLES) -> list[str]:
    """The tables whose row-level security filters what the connected role sees, each with why."""
    return [f"{name} ({why}, {n} polic{'y' if n == 1 else 'ies'})"
            for name, why, n in conn.execute(ROW_SECURITY, (list(tables),)).fetchall()]


def refuse_row_security(conn: psycopg.Connection[Any], tables: tuple[str, ...] = LEGACY_TABLES) -> None:
    found = row_security_in_the_way(conn, tables)
    if found:
        role = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        raise RefusedError(
            f"refusing to migrate: row-level security applies to role {role} on {', '.join(found)}; the backfill,"
            " the table copy and the checks would see only the rows its policies show. Migrate as a role with"
            " BYPASSRLS (or the owner, after ALTER TABLE ... NO FORCE ROW LEVEL SECURITY), or disable row-level"
            " security for the migration; nothing was changed")
