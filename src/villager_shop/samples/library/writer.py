"""The library's two applications as live writers (live.py runs them). The old one writes books'
publisher, price and copies and loans' ISBN: new books and loans, changes, returns, deletes. The
new one, once editions exist with their sync triggers, writes publisher_id, the default edition and
loans by edition_id: a book it inserts still gives the legacy NOT NULL price a value (a placeholder,
replaced at once through the edition in the same transaction). The old application owns the
generated books and loans of even number, the new one those of odd number, each also its own."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import psycopg

from villager_shop.samples.compare import key_sql
from villager_shop.samples.library.generate import LOANS_PER_BOOK, MEMBERS, book_isbn, isbn, price, publisher
from villager_shop.samples.live import App, Ledger, Probe, delete_own
from villager_shop.samples.mess import messy, variant

PLACEHOLDER_PRICE = Decimal("0.01")
PROBES = {
    "books": Probe(
        f"SELECT b.isbn AS k, b.publisher, b.price, b.copies, {key_sql('b.publisher')} AS publisher_key,"
        f"       {key_sql('p.name')} AS publisher_key_new, e.price AS price_new, e.copies AS copies_new"
        f"  FROM public.books b LEFT JOIN public.publishers p ON p.id = b.publisher_id"
        f"  LEFT JOIN public.editions e ON e.book_isbn = b.isbn AND e.is_default WHERE b.isbn = ANY(%(keys)s)",
        (("publisher_key", "publisher_key_new"), ("price", "price_new"), ("copies", "copies_new"))),
    "loans": Probe(
        "SELECT l.id AS k, l.isbn, e.book_isbn AS isbn_new FROM public.loans l"
        "  LEFT JOIN public.editions e ON e.id = l.edition_id WHERE l.id = ANY(%(keys)s)",
        (("isbn", "isbn_new"),)),
}


def _numbered(rng: random.Random, n: int, parity: int) -> int:
    """A generated row number (1..n): an even one (parity 0) or an odd one (parity 1)."""
    return 2 * rng.randint(1, n // 2) if parity == 0 else 2 * rng.randint(0, (n - 1) // 2) + 1


def _book(rng: random.Random, ledger: Ledger, rows: int, parity: int) -> str:
    mine = ledger.mine(rng, "books") if rng.random() < 0.5 else None
    return str(mine) if mine is not None else book_isbn(_numbered(rng, rows, parity))


def _loan(rng: random.Random, ledger: Ledger, rows: int, parity: int) -> int:
    mine = ledger.mine(rng, "loans") if rng.random() < 0.5 else None
    return int(mine) if mine is not None else _numbered(rng, LOANS_PER_BOOK * rows, parity)


def old_app(rows: int) -> App:
    """The application of before the migration: books carry publisher, price and copies."""
    made = iter(range(1, 10**8))

    def insert_book(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        key, pub, cost, copies = isbn("9798", next(made)), messy(rng, publisher(rng)), price(rng), rng.randint(1, 5)
        conn.execute("INSERT INTO books (isbn, title, publisher, price, copies) VALUES (%s, %s, %s, %s, %s)",
                     (key, f"Live book {key}", pub, cost, copies))
        ledger.expect("books", key, inserted=True, publisher=pub, price=cost, copies=copies)
        return "insert_book"

    def update_publisher(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        key, pub = _book(rng, ledger, rows, 0), messy(rng, publisher(rng))
        conn.execute("UPDATE books SET publisher = %s, updated_at = now() WHERE isbn = %s", (pub, key))
        ledger.expect("books", key, publisher=pub)
        return "update_publisher"

    def update_stock(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        key, cost, copies = _book(rng, ledger, rows, 0), price(rng), rng.randint(0, 9)
        conn.execute("UPDATE books SET price = %s, copies = %s, updated_at = now() WHERE isbn = %s",
                     (cost, copies, key))
        ledger.expect("books", key, price=cost, copies=copies)
        return "update_price_copies"

    # Its own books have no loans (loans go to generated books): a delete never meets a foreign key.
    delete_book = delete_own("books", "isbn", "delete_book")

    def insert_loan(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        key = book_isbn(rng.randint(1, rows))
        row = conn.execute("INSERT INTO loans (isbn, member) VALUES (%s, %s) RETURNING id",
                           (key, variant(rng, rng.choice(MEMBERS)))).fetchone()
        assert row is not None
        ledger.expect("loans", row[0], inserted=True, isbn=key)
        return "insert_loan"

    def move_loan(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        lid, key = _loan(rng, ledger, rows, 0), book_isbn(rng.randint(1, rows))
        conn.execute("UPDATE loans SET isbn = %s WHERE id = %s", (key, lid))
        ledger.expect("loans", lid, isbn=key)
        return "update_loan_isbn"

    def return_loan(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        lid = ledger.mine(rng, "loans")
        if lid is None:
            return "skipped"
        conn.execute("UPDATE loans SET returned_at = now() WHERE id = %s AND returned_at IS NULL", (lid,))
        return "return_loan"

    delete_loan = delete_own("loans", "id", "delete_loan")

    return App("old", ((insert_book, 3), (update_publisher, 4), (update_stock, 4), (delete_book, 1),
                       (insert_loan, 3), (move_loan, 2), (return_loan, 1), (delete_loan, 1)))


def _normalized_ready(conn: psycopg.Connection[Any]) -> bool:
    """The new application is deployed once what it writes exists: publisher_id, editions with the
    books' trigger that gives a new book its default edition, loans.edition_id."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
        "         AND (table_name, column_name) IN (('books', 'publisher_id'), ('loans', 'edition_id'))) = 2"
        "   AND EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        "                WHERE t.tgrelid = to_regclass('public.books') AND p.prosrc LIKE '%%INSERT INTO public.editions%%')"
    ).fetchone()
    return bool(row and row[0])


def _publisher(conn: psycopg.Connection[Any]) -> tuple[Any, str] | None:
    row = conn.execute(f"SELECT id, {key_sql('name')} FROM public.publishers ORDER BY random() LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def new_app(rows: int) -> App:
    """The application of after the migration: publishers, editions, loans by edition."""
    made = iter(range(1, 10**8))

    def insert_book(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        pub = _publisher(conn)
        if pub is None:
            return "skipped"
        key, cost, copies = isbn("9799", next(made)), price(rng), rng.randint(1, 5)
        conn.execute("INSERT INTO books (isbn, title, publisher_id, price) VALUES (%s, %s, %s, %s)",
                     (key, f"New book {key}", pub[0], PLACEHOLDER_PRICE))
        done = conn.execute("UPDATE editions SET price = %s, copies = %s WHERE book_isbn = %s AND is_default",
                            (cost, copies, key)).rowcount
        if done != 1:
            raise psycopg.DataError(f"book {key} has no default edition after its insert")
        ledger.expect("books", key, inserted=True, publisher_key=pub[1], price=cost, copies=copies)
        return "insert_book"

    def update_edition(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        key, cost, copies = _book(rng, ledger, rows, 1), price(rng), rng.randint(0, 9)
        done = conn.execute("UPDATE editions SET price = %s, copies = %s, updated_at = now()"
                            " WHERE book_isbn = %s AND is_default", (cost, copies, key)).rowcount
        if done == 0:
            return "skipped"  # not backfilled yet: the new application does not see this book
        ledger.expect("books", key, price=cost, copies=copies)
        return "update_edition"

    def update_publisher(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        pub = _publisher(conn)
        if pub is None:
            return "skipped"
        key = _book(rng, ledger, rows, 1)
        conn.execute("UPDATE books SET publisher_id = %s, updated_at = now() WHERE isbn = %s", (pub[0], key))
        ledger.expect("books", key, publisher_key=pub[1])
        return "update_publisher_id"

    def insert_loan(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        key = book_isbn(rng.randint(1, rows))
        edition = conn.execute("SELECT id FROM editions WHERE book_isbn = %s AND is_default", (key,)).fetchone()
        if edition is None:
            return "skipped"
        row = conn.execute("INSERT INTO loans (edition_id, member) VALUES (%s, %s) RETURNING id",
                           (edition[0], rng.choice(MEMBERS))).fetchone()
        assert row is not None
        ledger.expect("loans", row[0], inserted=True, isbn=key)
        return "insert_loan"

    delete_book = delete_own("books", "isbn", "delete_book")

    return App("new", ((insert_book, 3), (update_edition, 4), (update_publisher, 3), (insert_loan, 3),
                       (delete_book, 1)), ready=_normalized_ready)
