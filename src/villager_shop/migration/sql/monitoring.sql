-- The guide's monitoring views, correct on PostgreSQL 13-18, and check_data_integrity().

-- name: slow_queries_fn
-- pg_stat_statements is read through dynamic SQL so that the view exists (and explains itself)
-- on servers where the extension is not loaded; *_exec_time are the PostgreSQL 13+ names, and only
-- statements of the current database are shown.
CREATE OR REPLACE FUNCTION villager_migration.slow_queries(min_mean_ms double precision DEFAULT 100)
RETURNS TABLE (query text, calls bigint, total_exec_time double precision, mean_exec_time double precision,
               stddev_exec_time double precision, max_exec_time double precision)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    why text;  -- why there are no statistics to show, as the view's one row
BEGIN
    IF to_regclass('pg_stat_statements') IS NULL THEN
        why := 'pg_stat_statements is not loaded or not created in this database: add it to'
               ' shared_preload_libraries, restart, and run CREATE EXTENSION pg_stat_statements';
    -- A cluster upgraded from PostgreSQL 12 keeps the extension's old columns (total_time) until
    -- it is updated.
    ELSIF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('pg_stat_statements')
                         AND attname = 'total_exec_time' AND NOT attisdropped) THEN
        why := 'pg_stat_statements is at an old version (total_time columns): run'
               ' ALTER EXTENSION pg_stat_statements UPDATE';
    ELSE
        -- The library may still not be preloaded (and reading shared_preload_libraries needs
        -- pg_read_all_settings, which an application role rarely has): its own error tells.
        BEGIN
            RETURN QUERY EXECUTE
                'SELECT s.query, s.calls, s.total_exec_time, s.mean_exec_time, s.stddev_exec_time, s.max_exec_time
                   FROM pg_stat_statements s
                  WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND s.mean_exec_time > $1
                  ORDER BY s.mean_exec_time DESC'
                USING min_mean_ms;
            RETURN;
        EXCEPTION WHEN object_not_in_prerequisite_state THEN
            why := 'pg_stat_statements is not loaded: add it to shared_preload_libraries and restart';
        END;
    END IF;
    RETURN QUERY SELECT why, NULL::bigint, NULL::double precision, NULL::double precision,
                        NULL::double precision, NULL::double precision;
END
$fn$;

-- name: slow_queries
CREATE OR REPLACE VIEW public.slow_queries AS
    SELECT * FROM villager_migration.slow_queries(100);

-- name: db_performance_summary
-- Connections are compared with 80 % of max_connections (not a fixed 100); the cache hit ratio
-- is the current database's, not a sum over all databases.
CREATE OR REPLACE VIEW public.db_performance_summary AS
WITH conn AS (
    SELECT count(*)::numeric AS value, current_setting('max_connections')::numeric AS max_conn
      FROM pg_stat_activity WHERE backend_type = 'client backend'
), hit AS (
    SELECT round(blks_hit * 100.0 / nullif(blks_hit + blks_read, 0), 2) AS value
      FROM pg_stat_database WHERE datname = current_database()
)
SELECT 'connection_count'::text AS metric, conn.value AS value, round(conn.max_conn * 0.8) AS threshold,
       CASE WHEN conn.value > conn.max_conn * 0.8 THEN 'CRITICAL' ELSE 'OK' END AS status
  FROM conn
UNION ALL
SELECT 'cache_hit_ratio', hit.value, 90::numeric,
       CASE WHEN hit.value < 90 THEN 'CRITICAL' ELSE 'OK' END
  FROM hit;

-- name: normalized_violations
-- The normalized schema's own invariants, true before and after `complete`: order items point at a
-- variant of their product unless quarantined, and at its default variant when it has one and they
-- have none; orders whose amounts are wrong are quarantined.
CREATE OR REPLACE FUNCTION villager_migration.normalized_violations()
RETURNS TABLE (kind text, table_name text, row_id uuid, detail text)
LANGUAGE sql STABLE AS $fn$
    SELECT 'order_item_variant', 'order_items', oi.id,
           format('product %s, variant %s of product %s', oi.product_id, oi.variant_id, v.product_id)
      FROM public.order_items oi LEFT JOIN public.product_variants v ON v.id = oi.variant_id
     WHERE (oi.variant_id IS NOT NULL AND v.product_id IS DISTINCT FROM oi.product_id)
        OR ((oi.variant_id IS NULL OR oi.quantity <= 0)
            AND NOT EXISTS (SELECT 1 FROM villager_migration.quarantine q
                             WHERE q.table_name = 'order_items' AND q.row_id = oi.id))
    UNION ALL
    SELECT 'unlinked_item', 'order_items', oi.id,
           format('no variant, but product %s has the default variant %s', oi.product_id, v.id)
      FROM public.order_items oi JOIN public.product_variants v ON v.product_id = oi.product_id AND v.is_default
     WHERE oi.variant_id IS NULL
    UNION ALL
    SELECT 'not_quarantined', 'orders', o.id,
           format('%s: subtotal %s + delivery_fee %s, total %s',
                  villager_migration.order_problem(o.subtotal, o.delivery_fee, o.total),
                  o.subtotal, o.delivery_fee, o.total)
      FROM public.orders o
     WHERE villager_migration.order_problem(o.subtotal, o.delivery_fee, o.total) IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM villager_migration.quarantine q
                        WHERE q.table_name = 'orders' AND q.row_id = o.id)
    UNION ALL
    SELECT 'stale_quarantine', q.table_name, q.row_id, format('quarantined for %s, but the row is fine or gone', q.reason)
      FROM villager_migration.quarantine q
     WHERE (q.table_name = 'orders' AND NOT EXISTS (
                SELECT 1 FROM public.orders o WHERE o.id = q.row_id
                   AND villager_migration.order_problem(o.subtotal, o.delivery_fee, o.total) IS NOT NULL))
        OR (q.table_name = 'order_items' AND NOT EXISTS (
                SELECT 1 FROM public.order_items oi WHERE oi.id = q.row_id
                   AND (oi.variant_id IS NULL OR oi.quantity <= 0)))
        -- Only products, orders and order items are ever quarantined (docs/migration-rules.md).
        OR q.table_name NOT IN ('products', 'orders', 'order_items')
$fn$;

-- name: check_data_integrity_migrating
-- One row per violation while both representations live: a legacy value and its normalized
-- counterpart disagree (a category is mapped once per distinct pair of legacy value and category row, not
-- once per product: category_key() is the costly part), or a row is neither migrated nor quarantined, or a quarantine entry is stale.
CREATE OR REPLACE FUNCTION public.check_data_integrity()
RETURNS TABLE (kind text, table_name text, row_id uuid, detail text)
LANGUAGE sql STABLE AS $fn$
    SELECT 'address_mismatch', 'users', u.id,
           format('house_number %L should map to %L, address is %L', u.house_number,
                  villager_migration.canonical_house_number(u.house_number), a.house_number)
      FROM public.users u LEFT JOIN public.addresses a ON a.id = u.address_id
     WHERE villager_migration.canonical_house_number(u.house_number) IS DISTINCT FROM a.house_number
    UNION ALL
    SELECT 'address_mismatch', 'shops', s.id,
           format('house_number %L should map to %L, address is %L', s.house_number,
                  villager_migration.canonical_house_number(s.house_number), a.house_number)
      FROM public.shops s LEFT JOIN public.addresses a ON a.id = s.address_id
     WHERE villager_migration.canonical_house_number(s.house_number) IS DISTINCT FROM a.house_number
    UNION ALL
    SELECT 'category_mismatch', 'products', p.id,
           format('category %L should map to key %L, category row has %L', p.category, bad.want, bad.name_key)
      FROM (SELECT d.category, d.category_id, villager_migration.category_key(d.category) AS want, c.name_key
              FROM (SELECT DISTINCT category, category_id FROM public.products WHERE category_id IS NOT NULL) d
              LEFT JOIN public.product_categories c ON c.id = d.category_id
             WHERE villager_migration.category_key(d.category) IS DISTINCT FROM c.name_key) bad
      JOIN public.products p ON p.category_id = bad.category_id AND p.category IS NOT DISTINCT FROM bad.category
    UNION ALL
    SELECT 'category_mismatch', 'products', p.id,
           format('category %L should map to key %L, category row has %L', p.category,
                  villager_migration.category_key(p.category), NULL)
      FROM public.products p
     WHERE p.category_id IS NULL AND villager_migration.category_key(p.category) IS NOT NULL
    UNION ALL
    SELECT 'base_price_mismatch', 'products', p.id, format('price %s, base_price %s', p.price, p.base_price)
      FROM public.products p
     WHERE p.base_price IS DISTINCT FROM CASE WHEN p.price > 0 THEN p.price END
    UNION ALL
    SELECT 'variant_mismatch', 'products', p.id,
           CASE WHEN v.id IS NULL THEN 'no default variant'
                ELSE format('price %s stock %s, default variant price %s stock %s', p.price, p.stock, v.price, v.stock)
           END
      FROM public.products p
      LEFT JOIN public.product_variants v ON v.product_id = p.id AND v.is_default
     WHERE p.price > 0 AND (v.id IS NULL OR v.price <> p.price OR v.stock <> greatest(p.stock, 0))
    UNION ALL
    SELECT 'not_quarantined', 'products', p.id, format('price %s is not positive', p.price)
      FROM public.products p
     WHERE p.price <= 0 AND NOT EXISTS (SELECT 1 FROM villager_migration.quarantine q
                                         WHERE q.table_name = 'products' AND q.row_id = p.id)
    UNION ALL
    SELECT 'stale_quarantine', q.table_name, q.row_id, format('quarantined for %s, but the row is fine or gone', q.reason)
      FROM villager_migration.quarantine q
     WHERE q.table_name = 'products' AND NOT EXISTS (
                SELECT 1 FROM public.products p WHERE p.id = q.row_id AND p.price <= 0)
    UNION ALL
    SELECT * FROM villager_migration.normalized_violations()
$fn$;

-- name: check_data_integrity_completed
-- After `complete` the legacy columns are gone; the normalized schema's own invariants remain.
CREATE OR REPLACE FUNCTION public.check_data_integrity()
RETURNS TABLE (kind text, table_name text, row_id uuid, detail text)
LANGUAGE sql STABLE AS $fn$
    SELECT 'missing_default_variant', 'products', p.id, 'no default variant and not quarantined'
      FROM public.products p
     WHERE NOT EXISTS (SELECT 1 FROM public.product_variants v WHERE v.product_id = p.id AND v.is_default)
       AND NOT EXISTS (SELECT 1 FROM villager_migration.quarantine q
                        WHERE q.table_name = 'products' AND q.row_id = p.id)
    UNION ALL
    SELECT 'base_price_mismatch', 'products', p.id, format('base_price %s, default variant price %s', p.base_price, v.price)
      FROM public.products p JOIN public.product_variants v ON v.product_id = p.id AND v.is_default AND v.is_active
     WHERE p.base_price IS DISTINCT FROM v.price
    UNION ALL
    SELECT * FROM villager_migration.normalized_violations()
$fn$;
