-- Lookup rows for every value the legacy rows use, created before the sync triggers exist
-- (steps/lookups.py). Nobody else writes these tables yet, so one statement each is safe.

-- name: seed_addresses
-- Each distinct spelling is canonicalized once (not once per row).
INSERT INTO public.addresses (house_number)
SELECT DISTINCT c FROM (
    SELECT villager_migration.canonical_house_number(raw.h) AS c
      FROM (SELECT house_number AS h FROM public.users UNION SELECT house_number FROM public.shops) raw) s
 WHERE c IS NOT NULL
ON CONFLICT (house_number) DO NOTHING

-- name: seed_product_categories
-- In table order, so a category is named after its first spelling there (docs/migration-rules.md).
SELECT count(villager_migration.ensure_category(s.category)) FROM (
    SELECT p.category, min(p.seen) AS first_seen
      FROM (SELECT category, row_number() OVER () AS seen FROM public.products) p
     WHERE p.category IS NOT NULL
     GROUP BY p.category
     ORDER BY first_seen OFFSET 0) s
