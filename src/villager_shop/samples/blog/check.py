"""The blog in its two forms, for compare.py: the legacy form reads the free text, the normalized
form the authors and tags rows it points at; each value as its key (one author however spelled)."""

from __future__ import annotations

from villager_shop.samples.compare import key_sql

LEGACY_FORM = (f"SELECT 'posts' AS tbl, p.id::text AS k, {key_sql('p.author_name')} AS author, {key_sql('p.tag')} AS tag"
               f"  FROM public.posts p"
               f" UNION ALL SELECT 'comments', c.id::text, {key_sql('c.author_name')}, NULL FROM public.comments c")
NORMALIZED_FORM = (f"SELECT 'posts' AS tbl, p.id::text AS k, {key_sql('a.name')} AS author, {key_sql('t.name')} AS tag"
                   f"  FROM public.posts p LEFT JOIN public.authors a ON a.id = p.author_id"
                   f"  LEFT JOIN public.tags t ON t.id = p.tag_id"
                   f" UNION ALL SELECT 'comments', c.id::text, {key_sql('a.name')}, NULL"
                   f"  FROM public.comments c LEFT JOIN public.authors a ON a.id = c.author_id")
