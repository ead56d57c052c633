-- The canonical forms of the messy legacy values: ONE implementation, used by the backfill, the
-- sync triggers, verify and the tests alike. See docs/migration-rules.md for the why.
--
-- {category_name} is the display name's expression: zero-width characters removed, NFKC, whitespace
-- runs (NEL included) -> one space, trimmed (normalize() only exists for UTF8: elsewhere only the
-- spaces); {normalize_upper} is that, upper case, NFKC again (steps/schema_objects.py: rules_sql).

-- name: canonical_house_number
-- NULL/blank -> NULL; zero-width characters removed; NFKC; whitespace runs (NEL included) -> one
-- space; trimmed; upper case, then NFKC again (upper case can make a letter and a combining mark
-- composable, and the rule must be idempotent); no space between a digit and the letter or digit
-- after it ('12 a' = '12A' = ' 12a ', 'Plot 7 b' -> 'PLOT 7B').
-- Bounded: a btree entry holds at most 2,704 bytes, so a result over 2,000 bytes becomes its first
-- 200 characters, ' #' and the md5 of the whole (distinct values stay distinct).
-- PL/pgSQL, not SQL: neither form is inlined, and PL/pgSQL takes about a quarter less time.
CREATE OR REPLACE FUNCTION villager_migration.canonical_house_number(raw text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
DECLARE
    c text := NULLIF(regexp_replace({normalize_upper}, '(\d) (?=[[:alnum:]])', '\1', 'g'), '');
BEGIN
    IF octet_length(c) > 2000 THEN
        RETURN rtrim(left(c, 200)) || ' #' || upper(md5(c));
    END IF;
    RETURN c;
END
$fn$;

-- name: category_name
-- The display name: without zero-width characters, NFKC, whitespace runs -> one space, trimmed;
-- NULL when blank.
CREATE OR REPLACE FUNCTION villager_migration.category_name(raw text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
BEGIN
    RETURN {category_name};
END
$fn$;

-- name: category_key
-- Two spellings are the same category when their keys are equal: case-folded display name,
-- bounded as house numbers are (over 2,000 bytes: first 200 characters, ' #', md5).
CREATE OR REPLACE FUNCTION villager_migration.category_key(raw text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
DECLARE
    k text := lower({category_name});  -- category_name(raw), inlined (a nested call costs a third more)
BEGIN
    IF octet_length(k) > 2000 THEN
        RETURN rtrim(left(k, 200)) || ' #' || md5(k);
    END IF;
    RETURN k;
END
$fn$;

-- name: slugify
-- Lower case; runs of ASCII punctuation/space -> '-'; non-ASCII letters kept ('मिठाई' stays);
-- no leading/trailing dash; a name with nothing left becomes 'category'. Collisions between
-- different names get -2 ... -5, then a suffix from the key's hash, in ensure_category().
CREATE OR REPLACE FUNCTION villager_migration.slugify(raw text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $fn$
    SELECT coalesce(
        NULLIF(btrim(regexp_replace(villager_migration.category_key(raw),
                                    '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', '-', 'g'), '-'), ''),
        'category')
$fn$;

-- name: ensure_address
-- The id of the address with this canonical house number, created if missing (race-safe). The row
-- is locked (FOR KEY SHARE) until the caller commits: a rename of the address waits for the caller's
-- rows, then renames their legacy text too; a rename that committed first is seen, and the number
-- gets an address of its own.
CREATE OR REPLACE FUNCTION villager_migration.ensure_address(canonical text) RETURNS uuid
LANGUAGE plpgsql AS $fn$
DECLARE
    found_id uuid;
BEGIN
    IF canonical IS NULL THEN
        RETURN NULL;
    END IF;
    LOOP
        SELECT id INTO found_id FROM public.addresses WHERE house_number = canonical FOR KEY SHARE;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        INSERT INTO public.addresses (house_number) VALUES (canonical)
        ON CONFLICT (house_number) DO NOTHING
        RETURNING id INTO found_id;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        -- Another session created it meanwhile (or renamed it away again): look once more.
    END LOOP;
END
$fn$;

-- name: ensure_category
-- The id of the category whose key matches `raw`, created if missing with a unique slug; locked
-- like ensure_address's.
CREATE OR REPLACE FUNCTION villager_migration.ensure_category(raw text) RETURNS uuid
LANGUAGE plpgsql AS $fn$
DECLARE
    k text := villager_migration.category_key(raw);
    base text;
    candidate text;
    n integer := 1;
    found_id uuid;
BEGIN
    IF k IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT id INTO found_id FROM public.product_categories WHERE name_key = k FOR KEY SHARE;
    IF found_id IS NOT NULL THEN
        RETURN found_id;
    END IF;
    base := villager_migration.slugify(raw);
    LOOP
        -- A few numbers, then the key's hash: a name never tries every number taken before it
        -- (3,000 names that all slugify to 'category' took 204 s when it did).
        candidate := CASE WHEN n = 1 THEN base
                          WHEN n <= 5 THEN base || '-' || n
                          WHEN n = 6 THEN base || '-' || left(md5(k), 8)
                          ELSE base || '-' || left(md5(k), 8) || '-' || (n - 5) END;
        INSERT INTO public.product_categories (name, slug)
        VALUES (villager_migration.category_name(raw), candidate)
        ON CONFLICT DO NOTHING
        RETURNING id INTO found_id;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        -- Either another session created this very category, or the slug belongs to another name.
        SELECT id INTO found_id FROM public.product_categories WHERE name_key = k FOR KEY SHARE;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        n := n + 1;
    END LOOP;
END
$fn$;

-- name: order_problem
-- Why an order's amounts are not acceptable in the normalized schema, or NULL.
CREATE OR REPLACE FUNCTION villager_migration.order_problem(subtotal numeric, delivery_fee numeric, total numeric)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE
        WHEN subtotal < 0 OR delivery_fee < 0 OR total < 0 THEN 'negative_amount'
        WHEN total IS DISTINCT FROM subtotal + delivery_fee THEN 'total_mismatch'
    END
$fn$;
