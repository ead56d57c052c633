-- The canonical forms of the messy legacy values: ONE implementation, used by the backfill, the
-- sync triggers, verify and the tests alike. See docs/migration-rules.md for the why.
--
-- {normalize} is `normalize(x, NFKC)` on UTF8 databases and plain `x` elsewhere (normalize()
-- only exists for UTF8).

-- name: canonical_house_number
-- NULL/blank -> NULL; NFKC; whitespace runs -> one space; trimmed; upper case; no space between a
-- digit and the letter or digit after it ('12 a' = '12A' = ' 12a ', 'Plot 7 b' -> 'PLOT 7B').
CREATE OR REPLACE FUNCTION villager_migration.canonical_house_number(raw text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $fn$
    SELECT NULLIF(
        regexp_replace(
            upper(btrim(regexp_replace({normalize_raw}, '\s+', ' ', 'g'))),
            '(\d) (?=[[:alnum:]])', '\1', 'g'),
        '')
$fn$;

-- name: category_name
-- The display name: NFKC, whitespace runs -> one space, trimmed; NULL when blank.
CREATE OR REPLACE FUNCTION villager_migration.category_name(raw text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $fn$
    SELECT NULLIF(btrim(regexp_replace({normalize_raw}, '\s+', ' ', 'g')), '')
$fn$;

-- name: category_key
-- Two spellings are the same category when their keys are equal: case-folded display name.
CREATE OR REPLACE FUNCTION villager_migration.category_key(raw text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $fn$
    SELECT lower(villager_migration.category_name(raw))
$fn$;

-- name: slugify
-- Lower case; runs of ASCII punctuation/space -> '-'; non-ASCII letters kept ('मिठाई' stays);
-- no leading/trailing dash; a name with nothing left becomes 'category'. Collisions between
-- different names get -2, -3, ... in ensure_category().
CREATE OR REPLACE FUNCTION villager_migration.slugify(raw text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $fn$
    SELECT coalesce(
        NULLIF(btrim(regexp_replace(villager_migration.category_key(raw),
                                    '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', '-', 'g'), '-'), ''),
        'category')
$fn$;

-- name: ensure_address
-- The id of the address with this canonical house number, created if missing (race-safe).
CREATE OR REPLACE FUNCTION villager_migration.ensure_address(canonical text) RETURNS uuid
LANGUAGE plpgsql AS $fn$
DECLARE
    found_id uuid;
BEGIN
    IF canonical IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT id INTO found_id FROM public.addresses WHERE house_number = canonical;
    IF found_id IS NOT NULL THEN
        RETURN found_id;
    END IF;
    INSERT INTO public.addresses (house_number) VALUES (canonical)
    ON CONFLICT (house_number) DO NOTHING
    RETURNING id INTO found_id;
    IF found_id IS NULL THEN
        SELECT id INTO found_id FROM public.addresses WHERE house_number = canonical;
    END IF;
    RETURN found_id;
END
$fn$;

-- name: ensure_category
-- The id of the category whose key matches `raw`, created if missing with a unique slug.
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
    SELECT id INTO found_id FROM public.product_categories WHERE name_key = k;
    IF found_id IS NOT NULL THEN
        RETURN found_id;
    END IF;
    base := villager_migration.slugify(raw);
    LOOP
        candidate := CASE WHEN n = 1 THEN base ELSE base || '-' || n END;
        INSERT INTO public.product_categories (name, slug)
        VALUES (villager_migration.category_name(raw), candidate)
        ON CONFLICT DO NOTHING
        RETURNING id INTO found_id;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        -- Either another session created this very category, or the slug belongs to another name.
        SELECT id INTO found_id FROM public.product_categories WHERE name_key = k;
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
