"""Packaged .sql files: the comments that open a query or a section never reach the server."""

from __future__ import annotations

from villager_shop.core.sqlfiles import read_query, read_sections, sections_of, without_leading_comments


def test_sections_drop_their_opening_comments_and_whatever_precedes_the_first() -> None:
    text = "\n".join([
        "-- file header, not a section",
        "SELECT 'ignored';",
        "-- name: first",
        "-- why the first exists",
        "",
        "SELECT 1;",
        "-- name: second   ",
        "SELECT 2",
        "-- a comment inside the query stays",
        "FROM t;",
    ])
    assert sections_of(text) == {"first": "SELECT 1;", "second": "SELECT 2\n-- a comment inside the query stays\nFROM t;"}
    assert sections_of("SELECT 1;") == {}


def test_a_whole_query_drops_only_its_opening_comments() -> None:
    assert without_leading_comments("\n-- a\n-- b\nSELECT 1\n-- c\n") == "SELECT 1\n-- c"


def test_the_shipped_files_read_through_the_one_reader() -> None:
    assert read_query("villager_shop.api.queries", "categories.sql").lstrip().upper().startswith(("SELECT", "WITH"))
    sections = read_sections("villager_shop.migration", "sql", "state.sql")
    assert sections and all(body and not body.startswith("--") for body in sections.values())
