-- One shop with its address and the number of products it lists.
SELECT json_build_object(
    'id', s.id, 'name', s.name, 'rating', s.rating, 'is_open', s.is_open,
    'address', CASE WHEN a.id IS NOT NULL THEN json_build_object('id', a.id, 'house_number', a.house_number) END,
    'product_count', (SELECT count(*) FROM public.products p
                       WHERE p.shop_id = s.id AND p.is_available
                         AND EXISTS (SELECT 1 FROM public.product_variants v
                                      WHERE v.product_id = p.id AND v.is_active))
)::text
  FROM public.shops s
  LEFT JOIN public.addresses a ON a.id = s.address_id
 WHERE s.id = %(id)s::uuid
