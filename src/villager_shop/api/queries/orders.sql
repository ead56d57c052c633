-- Orders as JSON. `order`: one order with its items; `list_*`: a page of orders (newest first,
-- keyset on created_at DESC, id DESC) as {"items": [...], "next_cursor": ...}; /*SCOPE*/ and
-- /*CURSOR*/ are replaced by the sections scope_* and cursor in orders.py, /*ORDER_JSON*/ by order_json.
-- name: order_json
-- One order with its items, over a row `o` of orders: the same shape for `order` and `list`.
json_build_object(
    'id', o.id, 'customer_id', o.customer_id, 'shop_id', o.shop_id, 'status', o.status,
    'subtotal', o.subtotal, 'delivery_fee', o.delivery_fee, 'total', o.total,
    'created_at', o.created_at, 'updated_at', o.updated_at,
    'items', coalesce((
        SELECT json_agg(json_build_object('id', i.id, 'product_id', i.product_id, 'variant_id', i.variant_id,
                                          'quantity', i.quantity, 'unit_price', i.unit_price)
                        ORDER BY i.created_at, i.id)
          FROM /*ITEMS*/ i WHERE i.order_id = o.id), '[]'::json))

-- name: place
-- The order, its items and the stock decrement in one statement, under the locks taken before
-- (orders.py); the JSON is built from the inserted rows (a statement does not see its own CTEs'
-- rows in the tables). Returns the order id, its JSON, the variants decremented, keys recorded.
WITH o AS (
    INSERT INTO public.orders (customer_id, shop_id, status, subtotal, delivery_fee, total)
    VALUES (%(customer)s, %(shop)s, 'pending', %(subtotal)s, %(fee)s, %(total)s)
    RETURNING *
), new_items AS (
    INSERT INTO public.order_items (order_id, product_id, variant_id, quantity, unit_price)
    SELECT (SELECT id FROM o), v.product_id, v.id, x.quantity, v.price
      FROM unnest(%(ids)s::uuid[], %(quantities)s::integer[]) WITH ORDINALITY AS x(variant_id, quantity, n)
      JOIN public.product_variants v ON v.id = x.variant_id
     ORDER BY x.n
    RETURNING *
), stock AS (
    UPDATE public.product_variants v SET stock = v.stock - x.quantity, updated_at = now()
      FROM unnest(%(ids)s::uuid[], %(quantities)s::integer[]) AS x(variant_id, quantity)
     WHERE v.id = x.variant_id
    RETURNING v.id
), keyed AS (
    UPDATE villager_service.idempotency_keys SET order_id = (SELECT id FROM o)
     WHERE user_id = %(customer)s AND key = %(key)s
    RETURNING 1
)
SELECT o.id, /*ORDER_JSON*/::text, (SELECT count(*) FROM stock), (SELECT count(*) FROM keyed)
  FROM o

-- name: order
SELECT /*ORDER_JSON*/::text
  FROM public.orders o
 WHERE o.id = %(id)s::uuid

-- name: list
WITH page AS (
    SELECT o.*
      FROM public.orders o
     WHERE true
       /*SCOPE*/
       /*CURSOR*/
     ORDER BY o.created_at DESC, o.id DESC
     LIMIT %(limit)s::integer + 1
), numbered AS (
    SELECT page.*, row_number() OVER (ORDER BY page.created_at DESC, page.id DESC) AS n FROM page
)
SELECT json_build_object(
    'items', coalesce(json_agg(/*ORDER_JSON*/ ORDER BY o.n) FILTER (WHERE o.n <= %(limit)s::integer), '[]'::json),
    'next_cursor', CASE WHEN count(*) > %(limit)s::integer THEN
        (array_agg(to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '_' || o.id
                   ORDER BY o.n DESC) FILTER (WHERE o.n <= %(limit)s::integer))[1]
    END
)::text
  FROM numbered o

-- name: scope_customer
       AND o.customer_id = %(user_id)s::uuid

-- name: scope_shopkeeper
       AND o.shop_id IN (SELECT s.id FROM public.shops s WHERE s.owner_id = %(user_id)s::uuid)

-- name: scope_status
       AND o.status = %(status)s

-- name: cursor
       AND (o.created_at, o.id) < (%(c_at)s::timestamp AT TIME ZONE 'UTC', %(c_id)s::uuid)
