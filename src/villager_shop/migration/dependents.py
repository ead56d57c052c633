"""The objects outside the migration that use a column it will drop.

`complete` drops the legacy columns in one short transaction. Any object of the operator's that
uses one of them either makes that drop fail (views, materialized views, rules, SQL functions
with a `BEGIN ATOMIC` body, column triggers, policies, publication column lists and row filters:
PostgreSQL refuses to drop what they depend on) or vanishes with it (indexes, checks, statistics
objects on the column: dropped silently). Both are found the same way, in pg_depend, so the
operator hears about them from `migrate plan` and `rehearse`, and `complete` refuses before it
waits or changes anything. A function whose body is a string (plpgsql, or SQL without BEGIN
ATOMIC) records no dependency and cannot be found: it fails when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from villager_shop.core.db import own_timeouts

OURS = "villager_migration"

# One row per object: what it is, and the columns it uses ("table.column", sorted). The migration's
# own objects (its schema, its trigger functions) are left out, and so is what belongs to the
# columns themselves: a default, a NOT NULL constraint (PostgreSQL 18), and a CHECK, UNIQUE or
# index that reads only columns being dropped (it goes with them, and nothing else loses it; a
# plan's split_child carries a CHECK to the child), and the sequence of a serial column that only
# those columns' defaults draw from. One that also reads a column that stays is named.
DEPENDENTS = """
WITH cols AS (
  SELECT c.oid AS relid, a.attnum, c.relname || '.' || a.attname AS col
    FROM unnest(%(tables)s::text[], %(columns)s::text[]) AS l(tbl, col)
    JOIN pg_class c ON c.relname = l.tbl AND c.relnamespace = 'public'::regnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = l.col AND a.attnum > 0 AND NOT a.attisdropped
), deps AS (
  SELECT DISTINCT d.classid, d.objid, d.objsubid, cols.relid, cols.attnum, cols.col
    FROM cols
    JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = cols.relid
                    AND d.refobjsubid = cols.attnum AND d.deptype IN ('n', 'a')
), rels AS (
  SELECT c.oid, c.relkind, n.nspname, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
), described AS (
  SELECT d.col, d.classid, d.objid, d.objsubid, x.object, x.ours
    FROM deps d
    CROSS JOIN LATERAL (
      SELECT CASE WHEN r.rulename = '_RETURN' AND v.relkind = 'v' THEN 'view ' || v.name
                  WHEN r.rulename = '_RETURN' AND v.relkind = 'm' THEN 'materialized view ' || v.name
                  ELSE 'rule ' || quote_ident(r.rulename) || ' on ' || v.name END AS object,
             v.nspname = %(ours)s AS ours
        FROM pg_rewrite r JOIN rels v ON v.oid = r.ev_class
       WHERE d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
      UNION ALL
      SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' ELSE 'function ' END || quote_ident(n.nspname) || '.'
             || quote_ident(p.proname) || '(' || coalesce((SELECT string_agg(format_type(a.t, NULL), ', ' ORDER BY a.i)
                                                       FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(t, i)), '')
             || ')', n.nspname = %(ours)s
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE d.classid = 'pg_proc'::regclass AND p.oid = d.objid
      UNION ALL
      SELECT 'trigger ' || quote_ident(t.tgname) || ' on ' || tr.name,
             (SELECT n.nspname = %(ours)s FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace WHERE f.oid = t.tgfoid)
        FROM pg_trigger t JOIN rels tr ON tr.oid = t.tgrelid
       WHERE d.classid = 'pg_trigger'::regclass AND t.oid = d.objid AND NOT t.tgisinternal
      UNION ALL
      SELECT CASE WHEN a.attgenerated <> '' THEN 'generated column ' ELSE 'default of column ' END
             || ar.name || '.' || quote_ident(a.attname), ar.nspname = %(ours)s
        FROM pg_attrdef ad JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
        JOIN rels ar ON ar.oid = ad.adrelid
       WHERE d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
         AND NOT (ad.adrelid = d.relid AND ad.adnum = d.attnum)
      UNION ALL
      SELECT CASE WHEN d.objsubid > 0 AND c.relkind IN ('r', 'p')
                  THEN 'generated column ' || c.name || '.' || quote_ident(a.attname)
                  WHEN c.relkind = 'i' THEN 'index ' || c.name
                  WHEN c.relkind = 'S' THEN 'sequence ' || c.name
                  ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END, c.nspname = %(ours)s
        FROM rels c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
       WHERE d.classid = 'pg_class'::regclass AND c.oid = d.objid
         AND NOT (d.objid = d.relid AND d.objsubid = d.attnum)
         AND NOT (c.relkind = 'i' AND NOT EXISTS (
                  SELECT 1 FROM pg_depend u WHERE u.classid = 'pg_class'::regclass AND u.objid = c.oid
                     AND u.refclassid = 'pg_class'::regclass AND u.refobjsubid > 0
                     AND (u.refobjid, u.refobjsubid) NOT IN (SELECT c2.relid, c2.attnum FROM cols c2)))
         AND NOT (c.relkind = 'S' AND NOT EXISTS (
                  SELECT 1 FROM pg_depend u JOIN pg_attrdef ud ON ud.oid = u.objid
                   WHERE u.classid = 'pg_attrdef'::regclass AND u.refclassid = 'pg_class'::regclass
                     AND u.refobjid = c.oid
                     AND (ud.adrelid, ud.adnum) NOT IN (SELECT c2.relid, c2.attnum FROM cols c2)))
      UNION ALL
      SELECT 'constraint ' || quote_ident(k.conname) || ' on ' || kr.name, kr.nspname = %(ours)s
        FROM pg_constraint k JOIN rels kr ON kr.oid = k.conrelid
       WHERE d.classid = 'pg_constraint'::regclass AND k.oid = d.objid
         AND NOT (k.contype = 'n' AND k.conrelid = d.relid AND k.conkey = ARRAY[d.attnum]::int2[])
         AND NOT (k.contype IN ('c', 'u') AND k.conrelid = d.relid
                  AND k.conkey <@ ARRAY(SELECT c2.attnum FROM cols c2 WHERE c2.relid = k.conrelid)::int2[])
      UNION ALL
      SELECT 'policy ' || quote_ident(p.polname) || ' on ' || pr.name, false
        FROM pg_policy p JOIN rels pr ON pr.oid = p.polrelid
       WHERE d.classid = 'pg_policy'::regclass AND p.oid = d.objid
      UNION ALL
      SELECT 'publication ' || quote_ident(pub.pubname) || ' (table ' || pt.name || ')', false
        FROM pg_publication_rel pr JOIN pg_publication pub ON pub.oid = pr.prpubid JOIN rels pt ON pt.oid = pr.prrelid
       WHERE d.classid = 'pg_publication_rel'::regclass AND pr.oid = d.objid
      UNION ALL
      SELECT 'statistics object ' || quote_ident(n.nspname) || '.' || quote_ident(s.stxname), n.nspname = %(ours)s
        FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
       WHERE d.classid = 'pg_statistic_ext'::regclass AND s.oid = d.objid
      UNION ALL
      SELECT pg_describe_object(d.classid, d.objid, d.objsubid), false
       WHERE d.classid NOT IN ('pg_rewrite'::regclass, 'pg_proc'::regclass, 'pg_trigger'::regclass,
                               'pg_attrdef'::regclass, 'pg_class'::regclass, 'pg_constraint'::regclass,
                               'pg_policy'::regclass, 'pg_publication_rel'::regclass, 'pg_statistic_ext'::regclass)
    ) x
)
SELECT object, array_agg(DISTINCT col ORDER BY col)
  FROM described
 WHERE NOT coalesce(ours, false)
 GROUP BY object
 ORDER BY object
"""


@dataclass(frozen=True)
class Dependent:
    object: str  # e.g. "view public.v_products"
    columns: tuple[str, ...]  # e.g. ("products.category",)

    def __str__(self) -> str:
        return f"{self.object} ({', '.join(self.columns)})"

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.object, "columns": list(self.columns)}


def find(conn: psycopg.Connection[Any], columns: tuple[tuple[str, str], ...]) -> list[Dependent]:
    """Every object outside the migration that uses one of `columns` ((table, column) of schema public)."""
    tables, names = [t for t, _ in columns], [c for _, c in columns]
    with own_timeouts(conn):
        rows = conn.execute(DEPENDENTS, {"tables": tables, "columns": names, "ours": OURS}).fetchall()
    return [Dependent(str(obj), tuple(str(c) for c in cols)) for obj, cols in rows]


def summary(found: list[Dependent], what: str) -> str:
    """`what` would break N objects that use legacy columns: A (t.c), B (t.c)."""
    n = len(found)
    return (f"{what} would break {n} object{'s' if n != 1 else ''} that use{'s' if n == 1 else ''} legacy columns: "
            + ", ".join(map(str, found)))
