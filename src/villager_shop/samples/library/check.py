"""The library in its two forms, for compare.py: the legacy form reads books' publisher, price and
copies and loans' ISBN; the normalized form the publishers row, the default edition, and the
edition a loan points at."""

from __future__ import annotations

from villager_shop.samples.compare import key_sql

LEGACY_FORM = (f"SELECT 'books' AS tbl, b.isbn AS k, {key_sql('b.publisher')} AS publisher, b.price::text AS price,"
               f"       b.copies::text AS copies"
               f"  FROM public.books b"
               f" UNION ALL SELECT 'loans', l.id::text, l.isbn, NULL, NULL FROM public.loans l")
NORMALIZED_FORM = (f"SELECT 'books' AS tbl, b.isbn AS k, {key_sql('p.name')} AS publisher, e.price::text AS price,"
                   f"       e.copies::text AS copies"
                   f"  FROM public.books b LEFT JOIN public.publishers p ON p.id = b.publisher_id"
                   f"  LEFT JOIN public.editions e ON e.book_isbn = b.isbn AND e.is_default"
                   f" UNION ALL SELECT 'loans', l.id::text, e.book_isbn, NULL, NULL"
                   f"  FROM public.loans l LEFT JOIN public.editions e ON e.id = l.edition_id")
