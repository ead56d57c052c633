"""The normalizers a plan can name (`trim`, `canonical`, `casefold`, `upper`) and the slug rule,
installed in the migration's schema. Immutable, so that a lookup table's key can be a generated
column over them; bounded like the villager rules (a btree entry holds at most 2,704 bytes: a key
over 2,000 bytes becomes its first 200 characters, ' #' and the md5 of the whole, case-folded)."""

from __future__ import annotations

V = "villager_migration"


def function_of(normalizer: str) -> str:
    """The SQL function a plan's normalizer name stands for."""
    return f"{V}.norm_{normalizer}" if "." not in normalizer else normalizer


def shipped_sql(utf8: bool) -> str:
    zero_width = "regexp_replace(raw, '[\\u200b-\\u200d\\u2060\\ufeff]', '', 'g')" if utf8 else "raw"
    nfkc = f"normalize({zero_width}, NFKC)" if utf8 else zero_width
    space = "[\\s\\u0085\\u00a0]+" if utf8 else "\\s+"
    canonical = f"NULLIF(btrim(regexp_replace({nfkc}, '{space}', ' ', 'g')), '')"
    bodies = {
        "trim": "NULLIF(btrim(raw), '')",
        "canonical": canonical,
        "casefold": f"lower({canonical})",
        "upper": f"normalize(upper({canonical}), NFKC)" if utf8 else f"upper({canonical})",
    }
    out = []
    for name, body in bodies.items():
        out.append(f"""CREATE OR REPLACE FUNCTION {V}.norm_{name}(raw text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
DECLARE
    c text := {body};
BEGIN
    IF octet_length(c) > 2000 THEN
        -- The hash of the case-folded whole: a case-folded key of two values that differ in case
        -- alone is one key, as the key of their whole texts is (lower() keeps the hash as it is).
        RETURN rtrim(left(c, 200)) || ' #' || md5(lower(c));
    END IF;
    RETURN c;
END
$fn$""")
    # A slug of a value with no letter or digit left: `fallback` (the plan's slug_fallback).
    out.append(f"""CREATE OR REPLACE FUNCTION {V}.plan_slug_or(raw text, fallback text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN raw IS NOT NULL THEN
           coalesce(NULLIF(btrim(regexp_replace(lower(left(raw, 200)),
                                                '[\\x01-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]+', '-', 'g'), '-'), ''),
                    fallback) END
$fn$""")
    out.append(f"""CREATE OR REPLACE FUNCTION {V}.plan_slug(raw text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $fn$ SELECT {V}.plan_slug_or(raw, 'item') $fn$""")
    return ";\n\n".join(out)
