-- One product page: the product, its category, its variants in sort order, its shop with the
-- shop's address. Public pages show only listed products (available, with an active variant) and
-- their active variants; owners and admins (include_hidden) see everything.
SELECT json_build_object(
    'id', p.id,
    'name', p.name,
    'description', p.description,
    'base_price', p.base_price,
    'rating', p.rating,
    'order_count', p.order_count,
    'is_available', p.is_available,
    'created_at', p.created_at,
    'updated_at', p.updated_at,
    'category', CASE WHEN c.id IS NOT NULL THEN json_build_object('id', c.id, 'name', c.name, 'slug', c.slug) END,
    'shop', json_build_object(
        'id', s.id, 'name', s.name, 'rating', s.rating, 'is_open', s.is_open,
        'address', CASE WHEN a.id IS NOT NULL THEN json_build_object('id', a.id, 'house_number', a.house_number) END),
    'variants', coalesce((
        SELECT json_agg(json_build_object('id', v.id, 'sku', v.sku, 'name', v.name, 'price', v.price,
                                          'stock', v.stock, 'is_default', v.is_default, 'is_active', v.is_active,
                                          'sort_order', v.sort_order)
                        ORDER BY v.sort_order, v.id)
          FROM public.product_variants v
         WHERE v.product_id = p.id AND (v.is_active OR %(include_hidden)s::boolean)), '[]'::json)
)::text
  FROM public.products p
  JOIN public.shops s ON s.id = p.shop_id
  LEFT JOIN public.addresses a ON a.id = s.address_id
  LEFT JOIN public.product_categories c ON c.id = p.category_id
 WHERE p.id = %(id)s::uuid
   AND (%(include_hidden)s::boolean
        OR (p.is_available
            AND EXISTS (SELECT 1 FROM public.product_variants v WHERE v.product_id = p.id AND v.is_active)))
