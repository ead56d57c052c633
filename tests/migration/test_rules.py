"""Properties of the normalization rules, evaluated by the SQL functions themselves (one
implementation for backfill, triggers and tests)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from villager_shop.core.db import create_database, drop_database
from villager_shop.migration.steps.schema_objects import rules_sql, section

ALPHABET = st.sampled_from(list("0123456789abcdefghijklmnopqrstuvwxyzABCDEFXYZ -/&!.,\t_éमिठाई"))
TEXT = st.text(ALPHABET, max_size=24)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def rules(pg_admin_url: str) -> Iterator[psycopg.Connection[Any]]:
    name = "vt_rules_props"
    drop_database(pg_admin_url, name)
    url = create_database(pg_admin_url, name)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(section("state.sql", "state").encode())
        c.execute(rules_sql(True).encode())
        yield c
    drop_database(pg_admin_url, name)


def q(c: psycopg.Connection[Any], fn: str, value: str | None) -> Any:
    row = c.execute(f"SELECT villager_migration.{fn}(%s)", (value,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize(("raw", "canon"), [
    ("12a", "12A"), (" 12A ", "12A"), ("12 A", "12A"), ("12  a", "12A"), ("\t12a\n", "12A"), ("", None),
    ("   ", None), (None, None), ("Plot 7 b", "PLOT 7B"), ("A 12", "A 12"), ("12-A", "12-A"), ("１２ａ", "12A"),
])
def test_canonical_house_number_examples(rules: psycopg.Connection[Any], raw: str | None, canon: str | None) -> None:
    assert q(rules, "canonical_house_number", raw) == canon


@SETTINGS
@given(raw=TEXT)
def test_canonical_house_number_is_idempotent_and_tidy(rules: psycopg.Connection[Any], raw: str) -> None:
    canon = q(rules, "canonical_house_number", raw)
    if not raw.strip():
        assert canon is None
        return
    assert canon is not None
    assert q(rules, "canonical_house_number", canon) == canon
    assert canon == canon.strip() and "  " not in canon and "\t" not in canon
    assert not re.search(r"[a-z]", canon)
    # No space between a digit and a letter or digit ('_' is neither: '0 _' stays as it is).
    assert not re.search(r"\d\s+[^\W_]", canon)


@SETTINGS
@given(raw=TEXT, pad=st.sampled_from(["", " ", "  ", "\t"]))
def test_house_number_ignores_case_and_outer_spacing(rules: psycopg.Connection[Any], raw: str, pad: str) -> None:
    ascii_raw = raw.encode("ascii", "ignore").decode()
    assert q(rules, "canonical_house_number", pad + ascii_raw.swapcase() + pad) == \
        q(rules, "canonical_house_number", ascii_raw)


@pytest.mark.parametrize(("raw", "slug"), [
    ("Electronics", "electronics"), ("electronics ", "electronics"), ("Home  Decor", "home-decor"),
    ("Fruits & Veg", "fruits-veg"), ("Fruits-Veg!", "fruits-veg"), ("मिठाई", "मिठाई"), ("Café Snacks", "café-snacks"),
    ("!!!", "category"), ("  Tea/Coffee ", "tea-coffee"),
])
def test_slugify_examples(rules: psycopg.Connection[Any], raw: str, slug: str) -> None:
    assert q(rules, "slugify", raw) == slug


@SETTINGS
@given(raw=TEXT.filter(lambda s: s.strip() != ""))
def test_slug_is_url_safe_and_stable(rules: psycopg.Connection[Any], raw: str) -> None:
    slug = q(rules, "slugify", raw)
    assert slug and slug == slug.lower()
    assert not slug.startswith("-") and not slug.endswith("-") and "--" not in slug
    assert not re.search(r"[\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]", slug)
    assert q(rules, "slugify", slug) == slug or slug == "category"
    key = q(rules, "category_key", raw)
    assert q(rules, "slugify", raw.upper() if raw.isascii() else raw) == slug or not raw.isascii()
    assert q(rules, "category_key", "  " + raw + " ") == key


@SETTINGS
@given(raw=TEXT)
def test_category_key_blank_is_null(rules: psycopg.Connection[Any], raw: str) -> None:
    key = q(rules, "category_key", raw)
    assert (key is None) == (raw.strip() == "")
