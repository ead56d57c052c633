-- Active categories as a JSON array: names with a letter first, by name ignoring case (a reader
-- looks for "Dairy", not for "!!!"), then the names without one (punctuation, digits), the same way.
SELECT coalesce(json_agg(json_build_object('id', c.id, 'name', c.name, 'slug', c.slug)
                         ORDER BY c.name !~ '[[:alpha:]]', lower(c.name), c.name, c.id),
                '[]'::json)::text
  FROM public.product_categories c
 WHERE c.is_active
