"""The blog's two applications as live writers (live.py runs them). The old one writes the free
text: posts and comments with messy author names and tags, changes of them, deletes. The new one,
once posts and comments have their author_id and tag_id, writes those references only: the sync
triggers must give the legacy text back. The old application owns the generated rows of even id,
the new one those of odd id, each also the rows it inserted."""

from __future__ import annotations

import random
from typing import Any

import psycopg

from villager_shop.samples.blog.generate import COMMENTS_PER_POST, author, tag
from villager_shop.samples.compare import key_sql
from villager_shop.samples.live import App, Ledger, Probe, delete_own
from villager_shop.samples.mess import messy

PROBES = {
    "posts": Probe(
        f"SELECT p.id AS k, p.author_name, p.tag, {key_sql('p.author_name')} AS author_key,"
        f"       {key_sql('a.name')} AS author_key_new, {key_sql('p.tag')} AS tag_key, {key_sql('t.name')} AS tag_key_new"
        f"  FROM public.posts p LEFT JOIN public.authors a ON a.id = p.author_id"
        f"  LEFT JOIN public.tags t ON t.id = p.tag_id WHERE p.id = ANY(%(keys)s)",
        (("author_key", "author_key_new"), ("tag_key", "tag_key_new"))),
    "comments": Probe(
        f"SELECT c.id AS k, c.author_name, {key_sql('c.author_name')} AS author_key,"
        f"       {key_sql('a.name')} AS author_key_new"
        f"  FROM public.comments c LEFT JOIN public.authors a ON a.id = c.author_id WHERE c.id = ANY(%(keys)s)",
        (("author_key", "author_key_new"),)),
}


def _generated(rng: random.Random, n: int, parity: int) -> int:
    """A generated row (1..n): an even one (parity 0) or an odd one (parity 1)."""
    return 2 * rng.randint(1, n // 2) if parity == 0 else 2 * rng.randint(0, (n - 1) // 2) + 1


def _post(rng: random.Random, ledger: Ledger, rows: int, parity: int) -> int:
    mine = ledger.mine(rng, "posts") if rng.random() < 0.5 else None
    return int(mine) if mine is not None else _generated(rng, rows, parity)


def _comment(rng: random.Random, ledger: Ledger, rows: int, parity: int) -> int:
    mine = ledger.mine(rng, "comments") if rng.random() < 0.5 else None
    return int(mine) if mine is not None else _generated(rng, COMMENTS_PER_POST * rows, parity)


def old_app(rows: int) -> App:
    """The application of before the migration: it knows author_name and tag only."""

    def insert_post(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        a, t = messy(rng, author(rng)), messy(rng, tag(rng), null=0.1)
        row = conn.execute("INSERT INTO posts (title, body, author_name, tag, published_at)"
                           " VALUES (%s, 'written live', %s, %s, now()) RETURNING id",
                           (f"Live post {rng.randint(1, 10**9)}", a, t)).fetchone()
        assert row is not None
        ledger.expect("posts", row[0], inserted=True, author_name=a, tag=t)
        return "insert_post"

    def update_author(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        pid, a = _post(rng, ledger, rows, 0), messy(rng, author(rng))
        conn.execute("UPDATE posts SET author_name = %s, updated_at = now() WHERE id = %s", (a, pid))
        ledger.expect("posts", pid, author_name=a)
        return "update_post_author"

    def update_tag(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        pid, t = _post(rng, ledger, rows, 0), messy(rng, tag(rng), null=0.1)
        conn.execute("UPDATE posts SET tag = %s, updated_at = now() WHERE id = %s", (t, pid))
        ledger.expect("posts", pid, tag=t)
        return "update_post_tag"

    delete_post = delete_own("posts", "id", "delete_post")

    def insert_comment(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        a = messy(rng, author(rng), null=0.08)
        row = conn.execute("INSERT INTO comments (post_id, author_name, body) VALUES (%s, %s, 'live') RETURNING id",
                           (rng.randint(1, rows), a)).fetchone()
        assert row is not None
        ledger.expect("comments", row[0], inserted=True, author_name=a)
        return "insert_comment"

    def update_comment(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        cid, a = _comment(rng, ledger, rows, 0), messy(rng, author(rng), null=0.08)
        conn.execute("UPDATE comments SET author_name = %s WHERE id = %s", (a, cid))
        ledger.expect("comments", cid, author_name=a)
        return "update_comment_author"

    delete_comment = delete_own("comments", "id", "delete_comment")

    return App("old", ((insert_post, 3), (update_author, 4), (update_tag, 3), (delete_post, 1),
                       (insert_comment, 3), (update_comment, 3), (delete_comment, 1)))


def _normalized_ready(conn: psycopg.Connection[Any]) -> bool:
    """The new application is deployed once the columns it writes exist (each comes with its sync
    triggers, in the same transaction)."""
    row = conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
                       " AND (table_name, column_name) IN (('posts', 'author_id'), ('posts', 'tag_id'),"
                       " ('comments', 'author_id'))").fetchone()
    return bool(row and row[0] == 3)


def _pick(conn: psycopg.Connection[Any], lookup: str) -> tuple[Any, str] | None:
    row = conn.execute(f"SELECT id, {key_sql('name')} FROM public.{lookup} ORDER BY random() LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def new_app(rows: int) -> App:
    """The application of after the migration: it writes author_id and tag_id, never the text."""

    def insert_post(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        a, t = _pick(conn, "authors"), _pick(conn, "tags")
        if a is None or t is None:
            return "skipped"
        row = conn.execute("INSERT INTO posts (title, body, author_id, tag_id, published_at)"
                           " VALUES (%s, 'written by the new application', %s, %s, now()) RETURNING id",
                           (f"New post {rng.randint(1, 10**9)}", a[0], t[0])).fetchone()
        assert row is not None
        ledger.expect("posts", row[0], inserted=True, author_key=a[1], tag_key=t[1])
        return "insert_post"

    def update_author(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        a = _pick(conn, "authors")
        if a is None:
            return "skipped"
        pid = _post(rng, ledger, rows, 1)
        conn.execute("UPDATE posts SET author_id = %s, updated_at = now() WHERE id = %s", (a[0], pid))
        ledger.expect("posts", pid, author_key=a[1])
        return "update_post_author_id"

    def update_tag(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        t = _pick(conn, "tags")
        if t is None:
            return "skipped"
        pid = _post(rng, ledger, rows, 1)
        conn.execute("UPDATE posts SET tag_id = %s, updated_at = now() WHERE id = %s", (t[0], pid))
        ledger.expect("posts", pid, tag_key=t[1])
        return "update_post_tag_id"

    def insert_comment(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        a = _pick(conn, "authors")
        if a is None:
            return "skipped"
        row = conn.execute("INSERT INTO comments (post_id, author_id, body) VALUES (%s, %s, 'new') RETURNING id",
                           (rng.randint(1, rows), a[0])).fetchone()
        assert row is not None
        ledger.expect("comments", row[0], inserted=True, author_key=a[1])
        return "insert_comment"

    def update_comment(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        a = _pick(conn, "authors")
        if a is None:
            return "skipped"
        cid = _comment(rng, ledger, rows, 1)
        conn.execute("UPDATE comments SET author_id = %s WHERE id = %s", (a[0], cid))
        ledger.expect("comments", cid, author_key=a[1])
        return "update_comment_author_id"

    delete_post = delete_own("posts", "id", "delete_post")

    return App("new", ((insert_post, 3), (update_author, 3), (update_tag, 3), (insert_comment, 3),
                       (update_comment, 3), (delete_post, 1)), ready=_normalized_ready)
