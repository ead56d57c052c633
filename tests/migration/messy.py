"""A small legacy data set with every kind of messy row SPEC.md lists, written with plain SQL
(independent of our generator), plus a bulk filler for volume."""

from __future__ import annotations

import psycopg

MESSY_SQL = r"""
INSERT INTO users (id, name, phone, email, role, house_number) VALUES
 ('00000000-0000-0000-0000-000000000001', 'Asha',   '900001', 'asha@v.in',   'shopkeeper', '12a'),
 ('00000000-0000-0000-0000-000000000002', 'Bala',   '900002', 'bala@v.in',   'customer',   ' 12A '),
 ('00000000-0000-0000-0000-000000000003', 'Chitra', NULL,     'chitra@v.in', 'customer',   '12 A'),
 ('00000000-0000-0000-0000-000000000004', 'Dev',    '900004', NULL,          'customer',   NULL),
 ('00000000-0000-0000-0000-000000000005', 'Esha',   '900005', 'esha@v.in',   'customer',   ''),
 ('00000000-0000-0000-0000-000000000006', 'Farid',  '900006', 'farid@v.in',  'shopkeeper', '   '),
 ('00000000-0000-0000-0000-000000000007', 'Gita',   '900007', 'gita@v.in',   'admin',      E'7\tb');
INSERT INTO shops (id, owner_id, name, house_number, rating) VALUES
 ('10000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000001', 'Asha Kirana', '12A', 4.5),
 ('10000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000006', 'Farid Sweets', NULL, 3.9),
 ('10000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000006', 'Farid Veg', ' 44 ', 4.1);
INSERT INTO products (id, shop_id, name, category, price, stock, is_available, rating, order_count) VALUES
 ('20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 'Radio', 'Electronics', 499.00, 5, true, 4.2, 10),
 ('20000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000001', 'Torch', 'electronics ', 99.00, 0, true, 4.0, 3),
 ('20000000-0000-0000-0000-000000000003', '10000000-0000-0000-0000-000000000001', 'Lamp', 'Home Decor', 250.00, 2, true, 3.5, 1),
 ('20000000-0000-0000-0000-000000000004', '10000000-0000-0000-0000-000000000001', 'Vase', 'home  decor', 180.00, 1, false, 3.0, 0),
 ('20000000-0000-0000-0000-000000000005', '10000000-0000-0000-0000-000000000003', 'Mango', 'Fruits & Veg', 60.00, 100, true, 4.8, 50),
 ('20000000-0000-0000-0000-000000000006', '10000000-0000-0000-0000-000000000003', 'Okra', 'Fruits Veg', 30.00, 20, true, 4.1, 5),
 ('20000000-0000-0000-0000-000000000007', '10000000-0000-0000-0000-000000000002', 'Laddu', 'मिठाई', 15.00, 200, true, 4.9, 70),
 ('20000000-0000-0000-0000-000000000008', '10000000-0000-0000-0000-000000000002', 'Free sample', NULL, 0.00, 10, true, 0, 0),
 ('20000000-0000-0000-0000-000000000009', '10000000-0000-0000-0000-000000000002', 'Refund', '', -5.00, 1, true, 0, 0),
 ('20000000-0000-0000-0000-00000000000a', '10000000-0000-0000-0000-000000000002', 'Jalebi', 'Sweets!!', 20.00, -3, true, 4.0, 9),
 ('20000000-0000-0000-0000-00000000000b', '10000000-0000-0000-0000-000000000002', 'Mystery', '!!!', 5.00, 1, true, 1.0, 0),
 ('20000000-0000-0000-0000-00000000000c', '10000000-0000-0000-0000-000000000002', 'Puzzle', '???', 7.00, 1, true, 1.0, 0);
INSERT INTO orders (id, customer_id, shop_id, status, subtotal, delivery_fee, total) VALUES
 ('30000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000001', 'delivered', 598.00, 20.00, 618.00),
 ('30000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000003', '10000000-0000-0000-0000-000000000002', 'pending', 30.00, 10.00, 35.00),
 ('30000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000004', '10000000-0000-0000-0000-000000000002', 'cancelled', -10.00, 0, -10.00);
INSERT INTO order_items (id, order_id, product_id, quantity, unit_price) VALUES
 ('40000000-0000-0000-0000-000000000001', '30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', 1, 499.00),
 ('40000000-0000-0000-0000-000000000002', '30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000002', 1, 99.00),
 ('40000000-0000-0000-0000-000000000003', '30000000-0000-0000-0000-000000000002', '20000000-0000-0000-0000-000000000004', 2, 15.00),
 ('40000000-0000-0000-0000-000000000004', '30000000-0000-0000-0000-000000000002', '20000000-0000-0000-0000-000000000008', 1, 0.00),
 ('40000000-0000-0000-0000-000000000005', '30000000-0000-0000-0000-000000000003', '20000000-0000-0000-0000-000000000009', 0, -5.00);
"""

BULK_SQL = r"""
INSERT INTO users (name, phone, email, house_number, created_at)
SELECT 'user ' || g, 'p' || g, 'u' || g || '@v.in',
       CASE WHEN g %% 10 = 0 THEN NULL WHEN g %% 10 = 1 THEN ' ' || (g %% 500) || 'b ' ELSE (g %% 500) || 'B' END,
       now() - (g || ' minutes')::interval
  FROM generate_series(1, %(users)s) g;
INSERT INTO shops (owner_id, name, house_number)
SELECT id, 'shop of ' || name, house_number FROM users ORDER BY id LIMIT %(shops)s;
INSERT INTO products (shop_id, name, category, price, stock)
SELECT s.id, 'product ' || g, (ARRAY['Grocery', 'grocery ', 'Dairy', 'Snacks & Drinks', 'Snacks Drinks', NULL])[1 + g %% 6],
       CASE WHEN g %% 97 = 0 THEN 0 ELSE 10 + g %% 90 END, CASE WHEN g %% 53 = 0 THEN -1 ELSE g %% 40 END
  FROM generate_series(1, %(products)s) g
  JOIN LATERAL (SELECT id FROM shops ORDER BY id OFFSET (g %% %(shops)s) LIMIT 1) s ON true;
INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total)
SELECT u.id, s.id, 100, 10, CASE WHEN g %% 41 = 0 THEN 111 ELSE 110 END
  FROM generate_series(1, %(orders)s) g
  JOIN LATERAL (SELECT id FROM users ORDER BY id OFFSET (g %% %(users)s) LIMIT 1) u ON true
  JOIN LATERAL (SELECT id FROM shops ORDER BY id OFFSET (g %% %(shops)s) LIMIT 1) s ON true;
INSERT INTO order_items (order_id, product_id, quantity, unit_price)
SELECT o.id, p.id, 1 + g %% 3, 10
  FROM generate_series(1, %(items)s) g
  JOIN LATERAL (SELECT id FROM orders ORDER BY id OFFSET (g %% %(orders)s) LIMIT 1) o ON true
  JOIN LATERAL (SELECT id FROM products ORDER BY id OFFSET (g %% %(products)s) LIMIT 1) p ON true;
ANALYZE;
"""


def load_messy(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(MESSY_SQL.encode())


def load_bulk(url: str, users: int = 2000, shops: int = 100, products: int = 3000, orders: int = 2000,
              items: int = 4000) -> None:
    params = {"users": users, "shops": shops, "products": products, "orders": orders, "items": items}
    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in BULK_SQL.split(";\n"):
            if stmt.strip():
                conn.execute(stmt, params)  # type: ignore[arg-type]
