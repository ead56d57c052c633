"""The blog's legacy rows: `rows` posts and two comments per post on average, deterministic for a
seed, streamed by COPY. Authors and tags are typed the way people type them (mess.py); about one
post in a hundred has a title that is blank to the eye (spaces, no-break spaces, zero-width
characters), which plans/blog.toml quarantines."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from villager_shop.samples.copyin import copy_rows, reset_sequence
from villager_shop.samples.mess import BLANKS, messy, variant

TABLES = {"posts": "id", "comments": "id"}  # table -> key, in load order
COMMENTS_PER_POST = 2
START = datetime(2024, 1, 1, tzinfo=UTC)
FIRST = ("Ann", "Ben", "Carl", "Dana", "Émile", "Zoë", "José", "Åsa", "Li", "Noor", "Olga", "Priya", "Quinn",
         "Rafael", "Søren", "Tomás", "Uma", "Yusuf")
LAST = ("Lee", "Okafor", "García", "Nguyễn", "Müller", "Smith", "Kowalski", "O'Brien", "Tanaka", "Dubois")
AUTHORS = tuple(f"{f} {last}" for f in FIRST for last in LAST)
TAGS = ("Python", "PostgreSQL", "Rust!", "Go", "Machine Learning", "C++", "DevOps", "Café culture", "Open Source",
        "Data Engineering", "Security", "Web Design", "Résumé tips", "SQL", "Cloud", "Testing")
TOPICS = ("Notes on", "Why I like", "A week with", "Ten things about", "Migrating to", "Debugging")


def author(rng: random.Random) -> str:
    """A few prolific authors, many occasional ones (37 is prime to their number: any first name may lead)."""
    return AUTHORS[min(len(AUTHORS) - 1, int(rng.expovariate(1 / 25))) * 37 % len(AUTHORS)]


def tag(rng: random.Random) -> str:
    return TAGS[min(len(TAGS) - 1, int(rng.expovariate(1 / 4)))]


def title(rng: random.Random, i: int) -> str:
    if rng.random() < 0.01:
        return rng.choice(BLANKS)
    return variant(rng, f"{rng.choice(TOPICS)} {rng.choice(TAGS)} #{i}") if rng.random() < 0.1 else \
        f"{rng.choice(TOPICS)} {rng.choice(TAGS)} #{i}"


def _posts(rng: random.Random, n: int) -> Iterator[tuple[Any, ...]]:
    for i in range(1, n + 1):
        created = START + timedelta(minutes=37 * i + rng.randint(0, 30))
        published = None if rng.random() < 0.15 else created + timedelta(hours=rng.randint(0, 72))
        yield (i, title(rng, i), f"Body of post {i}. " * rng.randint(1, 4), messy(rng, author(rng)),
               messy(rng, tag(rng), null=0.1), published, created, created + timedelta(days=rng.randint(0, 30)))


def _comments(rng: random.Random, n_posts: int) -> Iterator[tuple[Any, ...]]:
    for i in range(1, COMMENTS_PER_POST * n_posts + 1):
        post = rng.randint(1, n_posts)
        yield (i, post, messy(rng, author(rng), null=0.08), f"Comment {i} on post {post}",
               START + timedelta(minutes=37 * post + rng.randint(60, 10_000)))


def generate(conn: psycopg.Connection[Any], rows: int, seed: int) -> dict[str, int]:
    """Fill the empty tables (in the caller's transaction); the rows written per table."""
    rng = random.Random(seed)
    counts = {
        "posts": copy_rows(conn, "posts", ("id", "title", "body", "author_name", "tag", "published_at", "created_at",
                                           "updated_at"), _posts(rng, rows)),
        "comments": copy_rows(conn, "comments", ("id", "post_id", "author_name", "body", "created_at"),
                              _comments(rng, rows)),
    }
    for table, key in TABLES.items():
        reset_sequence(conn, table, key)
    return counts
