"""The connection helpers every tool shares: databases on a server, and whether a relation exists."""

from __future__ import annotations

import uuid

import psycopg

from villager_shop.core.db import (
    create_database,
    create_database_on,
    database_exists,
    database_exists_on,
    drop_database,
    drop_database_on,
    relation_exists,
)
from villager_shop.core.urls import with_dbname


def test_a_database_is_created_found_and_dropped_through_a_url(pg_admin_url: str) -> None:
    name = f"vt_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    try:
        assert url == with_dbname(pg_admin_url, name) and database_exists(pg_admin_url, name)
        with psycopg.connect(url):  # a session still connected does not stop the drop
            drop_database(pg_admin_url, name)
        assert not database_exists(pg_admin_url, name)
    finally:
        drop_database(pg_admin_url, name)


def test_a_database_takes_the_encoding_and_locale_of_another_from_template0(pg_admin_url: str) -> None:
    name = f"vt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        try:
            create_database_on(admin, name, template="template0", locale_of="postgres")
            assert database_exists_on(admin, name)
            same = admin.execute(
                "SELECT count(DISTINCT (encoding, datcollate, datctype)) = 1 FROM pg_database"
                " WHERE datname IN (%s, 'postgres')", (name,)).fetchone()
            assert same == (True,)
        finally:
            drop_database_on(admin, name)
        assert not database_exists_on(admin, name)
        create_database_on(admin, name, template="template0", locale_of="vt_no_such_database")  # server's own
        drop_database_on(admin, name)


def test_a_relation_is_found_by_name_and_a_missing_one_or_schema_is_not(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY); CREATE VIEW public.v AS SELECT 1 AS one")
        assert relation_exists(conn, "public.t") and relation_exists(conn, "v") and relation_exists(conn, "t_pkey")
        assert not relation_exists(conn, "public.missing")
        assert not relation_exists(conn, "no_such_schema.t")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the transaction is still usable
