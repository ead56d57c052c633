-- The catalog listing: available products that have at least one active variant, ordered by
-- rating DESC, order_count DESC, id (idx_products_category_rating when filtered by category,
-- idx_products_available_rating otherwise), one page + 1 row to know whether there is a next one.
-- /*FILTERS*/ is replaced by the fixed filter lines below it in catalog.py (category, shop, q,
-- cursor); the keyset condition is a row comparison the index can start from.
-- The whole answer, {"items": [...], "next_cursor": ...}, is built here as JSON text.
WITH page AS (
    SELECT p.id, p.shop_id, p.category_id, p.name, p.description, p.base_price, p.rating, p.order_count
      FROM public.products p
     WHERE p.is_available
       /*FILTERS*/
       AND EXISTS (SELECT 1 FROM public.product_variants v WHERE v.product_id = p.id AND v.is_active)
     ORDER BY p.rating DESC, p.order_count DESC, p.id
     LIMIT %(limit)s::integer + 1
), numbered AS (
    SELECT page.*, row_number() OVER (ORDER BY page.rating DESC, page.order_count DESC, page.id) AS n
      FROM page
)
SELECT json_build_object(
    'items', coalesce(json_agg(json_build_object(
        'id', r.id,
        'name', r.name,
        'description', r.description,
        'base_price', r.base_price,
        'rating', r.rating,
        'order_count', r.order_count,
        'category', CASE WHEN c.id IS NOT NULL THEN json_build_object('id', c.id, 'name', c.name, 'slug', c.slug) END,
        'shop', json_build_object('id', s.id, 'name', s.name, 'rating', s.rating),
        'variants', coalesce((
            SELECT json_agg(json_build_object('id', v.id, 'sku', v.sku, 'name', v.name, 'price', v.price,
                                              'stock', v.stock, 'is_default', v.is_default,
                                              'sort_order', v.sort_order)
                            ORDER BY v.sort_order, v.id)
              FROM public.product_variants v
             WHERE v.product_id = r.id AND v.is_active), '[]'::json)
    ) ORDER BY r.n) FILTER (WHERE r.n <= %(limit)s::integer), '[]'::json),
    'next_cursor', CASE WHEN count(*) > %(limit)s::integer THEN
        (array_agg(rtrim(translate(encode(convert_to(concat_ws(':', r.rating, r.order_count, r.id), 'UTF8'),
                                          'base64'), E'+/\n', '-_'), '=')
                   ORDER BY r.n DESC) FILTER (WHERE r.n <= %(limit)s::integer))[1]
    END
)::text
  FROM numbered r
  JOIN public.shops s ON s.id = r.shop_id
  LEFT JOIN public.product_categories c ON c.id = r.category_id
