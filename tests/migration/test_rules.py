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

from tests.migration.conftest import unicode_case
from villager_shop.core.db import create_database, drop_database
from villager_shop.migration.planfile import bundled
from villager_shop.migration.planfile.normalizers import V, shipped_sql
from villager_shop.migration.planfile.spec import load
from villager_shop.migration.steps.schema_objects import rules_sql, section

# with letters whose case mapping interacts with NFKC (dotless ı + a combining mark, long s, a ligature)
ALPHABET = st.sampled_from(list("0123456789abcdefghijklmnopqrstuvwxyzABCDEFXYZ -/&!.,\t_éमिठाई\u0131\u0300\u0307ſﬀǅ\u200b\u0085"))
TEXT = st.text(ALPHABET, max_size=24)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# plans/villager.toml's rules under the built-in plan's names: its house-number function, the
# category lookup's case-folded key, and the slug of the category's canonical name.
FILE_ALIASES = f"""
CREATE FUNCTION {V}.canonical_house_number(raw text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT {V}.house_number(raw) $$;
CREATE FUNCTION {V}.category_key(raw text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT {V}.norm_casefold(raw) $$;
CREATE FUNCTION {V}.slugify(raw text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT {V}.plan_slug_or({V}.norm_canonical(raw), 'category') $$;
"""


@pytest.fixture(scope="module", params=["built-in", "file"])
def rules(request: pytest.FixtureRequest, pg_admin_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The built-in plan's rules, then those plans/villager.toml installs."""
    name = f"vt_rules_props_{request.param.replace('-', '_')}"
    drop_database(pg_admin_url, name)
    url = create_database(pg_admin_url, name)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(section("state.sql", "state").encode())
        if request.param == "built-in":
            c.execute(rules_sql(True).encode())
        else:
            c.execute(shipped_sql(True).encode())
            for text in load(bundled.path()).functions:
                c.execute(text.encode())
            c.execute(FILE_ALIASES.encode())
        yield c
    drop_database(pg_admin_url, name)


def blank(raw: str) -> bool:
    """Blank as the rules see it: whitespace (NEL included) and zero-width characters only."""
    return not raw.translate({0x200B: None, 0x200C: None, 0x200D: None, 0x2060: None, 0xFEFF: None}).strip()


def q(c: psycopg.Connection[Any], fn: str, value: str | None) -> Any:
    row = c.execute(f"SELECT villager_migration.{fn}(%s)", (value,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize(("raw", "canon"), [
    ("12a", "12A"), (" 12A ", "12A"), ("12 A", "12A"), ("12  a", "12A"), ("\t12a\n", "12A"), ("", None),
    ("   ", None), (None, None), ("Plot 7 b", "PLOT 7B"), ("A 12", "A 12"), ("12-A", "12-A"), ("１２ａ", "12A"),
    ("12\u200bA", "12A"), ("\u0085", None), ("\u200b", None), ("12\u0085a", "12A"), ("\ufeff7 b", "7B"),
])
def test_canonical_house_number_examples(rules: psycopg.Connection[Any], raw: str | None, canon: str | None) -> None:
    assert q(rules, "canonical_house_number", raw) == canon


@SETTINGS
@given(raw=TEXT)
def test_canonical_house_number_is_idempotent_and_tidy(rules: psycopg.Connection[Any], raw: str) -> None:
    canon = q(rules, "canonical_house_number", raw)
    if blank(raw):
        assert canon is None
        return
    assert canon is not None
    assert q(rules, "canonical_house_number", canon) == canon
    assert canon == canon.strip() and "  " not in canon and "\t" not in canon
    assert not re.search(r"[a-z]", canon)
    # No space between a digit and a letter or digit ('_' is neither: '0 _' stays as it is).
    assert not re.search(r"\d\s+[^\W_]" if unicode_case(rules) else r"\d\s+[0-9A-Za-z]", canon)


@SETTINGS
@given(raw=TEXT, pad=st.sampled_from(["", " ", "  ", "\t"]))
def test_house_number_ignores_case_and_outer_spacing(rules: psycopg.Connection[Any], raw: str, pad: str) -> None:
    ascii_raw = raw.encode("ascii", "ignore").decode()
    assert q(rules, "canonical_house_number", pad + ascii_raw.swapcase() + pad) == \
        q(rules, "canonical_house_number", ascii_raw)


@pytest.mark.parametrize(("raw", "slug"), [
    ("Electronics", "electronics"), ("electronics ", "electronics"), ("Home  Decor", "home-decor"),
    ("Fruits & Veg", "fruits-veg"), ("Fruits-Veg!", "fruits-veg"), ("मिठाई", "मिठाई"), ("Café Snacks", "café-snacks"),
    ("!!!", "category"), ("  Tea/Coffee ", "tea-coffee"), ("Fru\u200bits", "fruits"),
])
def test_slugify_examples(rules: psycopg.Connection[Any], raw: str, slug: str) -> None:
    assert q(rules, "slugify", raw) == slug


@SETTINGS
@given(raw=TEXT.filter(lambda s: not blank(s)))
def test_slug_is_url_safe_and_stable(rules: psycopg.Connection[Any], raw: str) -> None:
    slug = q(rules, "slugify", raw)
    assert slug and (slug == slug.lower() if unicode_case(rules) else not re.search("[A-Z]", slug))
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
    assert (key is None) == blank(raw)


@pytest.mark.parametrize("raw", ["\u0131\u0300", "\u0131\u0307 12", "ǅ1", "ſ 2"])
def test_canonical_house_number_is_idempotent_where_case_meets_nfkc(rules: psycopg.Connection[Any], raw: str) -> None:
    canon = q(rules, "canonical_house_number", raw)
    assert q(rules, "canonical_house_number", canon) == canon


@SETTINGS
@given(seed=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8),
       repeat=st.integers(min_value=60, max_value=400), upper=st.booleans())
def test_long_values_get_a_bounded_stable_key(rules: psycopg.Connection[Any], seed: str, repeat: int,
                                              upper: bool) -> None:
    """A btree entry holds at most 2,704 bytes: keys over 2,000 bytes are cut and hashed, and stay
    distinct, stable (idempotent) and blind to the case of the value, as short keys are."""
    value = rules.execute("SELECT string_agg(md5(g::text || %s), '') FROM generate_series(1, %s) g",
                          (seed, repeat)).fetchone()[0]  # type: ignore[index]
    value = value.upper() if upper else value
    house = q(rules, "canonical_house_number", value)
    key = q(rules, "category_key", value)
    slug = q(rules, "slugify", value)
    for v in (house, key, slug):
        assert len(v.encode()) <= 2000
    assert q(rules, "canonical_house_number", house) == house
    assert house == q(rules, "canonical_house_number", value.swapcase())
    assert key == q(rules, "category_key", value.swapcase()) and slug == slug.lower()
    other = q(rules, "canonical_house_number", value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert other != house  # one character apart, beyond the first 200: still two keys
