-- Active categories by name, as a JSON array.
SELECT coalesce(json_agg(json_build_object('id', c.id, 'name', c.name, 'slug', c.slug) ORDER BY c.name, c.id),
                '[]'::json)::text
  FROM public.product_categories c
 WHERE c.is_active
