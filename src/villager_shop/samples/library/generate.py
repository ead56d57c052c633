"""The library's legacy rows: `rows` books and two loans per book on average, deterministic for a
seed, streamed by COPY. Publishers are typed the way people type them (mess.py); about one book in
two hundred has a price of zero or below, and one loan in two hundred was returned before it was
lent: plans/library.toml quarantines both."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from villager_shop.samples.copyin import copy_rows, reset_sequence
from villager_shop.samples.mess import messy, variant

TABLES = {"books": "isbn", "loans": "id"}  # table -> key, in load order
LOANS_PER_BOOK = 2
START = datetime(2023, 1, 1, tzinfo=UTC)
PUBLISHERS = ("Penguin", "HarperCollins", "Gallimard", "Suhrkamp", "Éditions du Seuil", "Random House",
              "Oxford University Press", "O'Reilly Media", "No Starch Press", "Faber & Faber", "Kodansha",
              "Shūeisha", "Companhia das Letras", "Anagrama", "Verso", "Bloomsbury", "Pan Macmillan",
              "Springer", "MIT Press", "Hachette")
WORDS = ("Night", "River", "Garden", "Stone", "Letters", "City", "Silence", "Winter", "Glass", "Atlas", "Code",
         "Tide", "Orchard", "Lantern")
MEMBERS = ("ann", "Ben K.", "carla", "Dmitri", "élodie", "Farid", "grace", "Hugo", "Ines", "jun", "Kofi")


def isbn(prefix: str, n: int) -> str:
    """An ISBN-13 (hyphenated, with its check digit) from a 4-digit prefix and a number."""
    digits = f"{prefix}{n:08d}"
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return f"{digits[:3]}-{digits[3]}-{digits[4:]}-{check}"


def book_isbn(i: int) -> str:
    """The ISBN of generated book i (1..rows)."""
    return isbn("9781", i)


def publisher(rng: random.Random) -> str:
    return PUBLISHERS[min(len(PUBLISHERS) - 1, int(rng.expovariate(1 / 5)))]


def price(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(299, 8999)) / 100


def _books(rng: random.Random, n: int) -> Iterator[tuple[Any, ...]]:
    for i in range(1, n + 1):
        created = START + timedelta(minutes=23 * i)
        cost = price(rng) if rng.random() >= 0.005 else rng.choice((Decimal("0.00"), Decimal("-1.00")))
        name = f"The {rng.choice(WORDS)} of {rng.choice(WORDS)}"
        yield (book_isbn(i), variant(rng, name) if rng.random() < 0.05 else name, f"Author {rng.randint(1, n // 3 + 1)}",
               messy(rng, publisher(rng), null=0.04), rng.randint(1950, 2024), cost, rng.randint(0, 6), created, created)


def _loans(rng: random.Random, n_books: int) -> Iterator[tuple[Any, ...]]:
    for i in range(1, LOANS_PER_BOOK * n_books + 1):
        lent = START + timedelta(hours=rng.randint(0, 20_000))
        roll = rng.random()
        back = None if roll < 0.4 else lent - timedelta(days=rng.randint(1, 5)) if roll < 0.405 else \
            lent + timedelta(days=rng.randint(1, 30))
        yield i, book_isbn(rng.randint(1, n_books)), variant(rng, rng.choice(MEMBERS)), lent, back


def generate(conn: psycopg.Connection[Any], rows: int, seed: int) -> dict[str, int]:
    """Fill the empty tables (in the caller's transaction); the rows written per table."""
    rng = random.Random(seed)
    counts = {
        "books": copy_rows(conn, "books", ("isbn", "title", "author", "publisher", "published_year", "price",
                                           "copies", "created_at", "updated_at"), _books(rng, rows)),
        "loans": copy_rows(conn, "loans", ("id", "isbn", "member", "loaned_at", "returned_at"), _loans(rng, rows)),
    }
    reset_sequence(conn, "loans", "id")
    return counts
