-- The filter lines of list_products.sql, one section each; catalog.py joins those in use.
-- name: category
       AND p.category_id = (SELECT c.id FROM public.product_categories c WHERE c.slug = %(category)s)
-- name: shop
       AND p.shop_id = %(shop)s::uuid
-- name: q
       AND p.name ILIKE %(q)s
-- name: cursor
       AND (p.rating, p.order_count) <= (%(c_rating)s::numeric, %(c_count)s::integer)
       AND ((p.rating, p.order_count) < (%(c_rating)s::numeric, %(c_count)s::integer) OR p.id > %(c_id)s::uuid)
