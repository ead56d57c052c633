"""The plan file's shape: every problem found at once, each placed in the file; and the steps the
assembler orders from the operations (no database: a catalog given by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from villager_shop.migration.planfile.assemble import assemble
from villager_shop.migration.planfile.catalog import Catalog, TableInfo
from villager_shop.migration.planfile.spec import ExtractLookup, PlanError, load, parse
from villager_shop.migration.steps.rebuild import RebuildTable

PLANS = Path(__file__).resolve().parents[3] / "plans"

LIBRARY = Catalog({
    "books": TableInfo("isbn", "text", {"isbn": "text", "title": "text", "publisher": "text",
                                        "price": "numeric(8,2)", "copies": "integer"}, frozenset({"price", "copies"})),
    "loans": TableInfo("id", "integer", {"id": "integer", "isbn": "text", "member": "text",
                                         "loaned_at": "timestamp with time zone",
                                         "returned_at": "timestamp with time zone"}),
})


def test_every_problem_is_reported_with_its_place() -> None:
    text = """version = 1
[[operation]]
type = "extract_lookup"
lookup = "Bad Name"
sources = [{ table = "posts" }]
colour = "red"

[[operation]]
type = "split_kid"

[[operation]]
type = "create_index"
table = "order"
name = "idx"
columns = ["a; DROP TABLE x"]
"""
    with pytest.raises(PlanError) as exc:
        parse(text, "p.toml")
    places = [str(p) for p in exc.value.problems]
    assert any(p.startswith("operation 1 (extract_lookup, line 2), lookup:") for p in places), places
    assert any(p.startswith("operation 1 (extract_lookup, line 2), sources[0], column: missing") for p in places)
    assert any(p.startswith("operation 1 (extract_lookup, line 2), colour: unknown key") for p in places)
    assert any(p.startswith("operation 2 (split_kid, line 8): type 'split_kid'") for p in places)
    assert any("operation 3 (create_index, line 11), table: 'order' is a reserved SQL word" in p for p in places)
    assert any(p.startswith("operation 3 (create_index, line 11), columns") for p in places)
    assert len(places) == 6, places


def test_expressions_are_single_expressions() -> None:
    with pytest.raises(PlanError) as exc:
        parse('[[operation]]\ntype = "quarantine_rule"\ntable = "t"\nreason = "r"\nwhen = "true; DROP TABLE t"')
    assert "one SQL expression" in str(exc.value.problems[0])


def test_not_toml_and_no_operation() -> None:
    with pytest.raises(PlanError, match="not valid TOML"):
        parse("[[operation]\n")
    with pytest.raises(PlanError, match="missing"):
        parse('name = "x"\n')


def test_shipped_plans_parse_and_assemble_in_phase_order() -> None:
    spec = load(PLANS / "library.toml")
    assert isinstance(spec.operations[0], ExtractLookup)
    plan = assemble(spec, LIBRARY)
    names = [s.name for s in plan.steps]
    # loans.isbn has no index: the link builds one first, for its triggers to find a book's loans.
    assert names[:4] == ["state_schema", "plan_state", "index_idx_loans_isbn", "plan_functions"]
    # New tables before the columns whose triggers use them; every backfill after the triggers step;
    # a link's backfill after its split's; foreign keys after their indexes; validations, then indexes.
    assert names.index("table_editions") < names.index("column_loans_edition_id") < names.index("sync_triggers")
    assert names.index("sync_triggers") < names.index("backfill_books")
    assert names.index("backfill_books") < names.index("backfill_loans_edition_id")
    # One walk of books for the lookup, the split and the quarantine rule; the loans rule waits for
    # nothing, so it joins the loans walk only if there is one (the link's copy is not a walk).
    books = next(s for s in plan.steps if s.name == "backfill_books")
    # One statement per batch; the split's default children are inserted in books' key order.
    assert len(books.ops) == 3 and len(books.actions()) == 1 and books.walk == "key"
    assert not any(n.startswith(("backfill_books_", "quarantine_books_")) for n in names)
    assert names.index("index_idx_loans_edition_id") < names.index("constraint_fk_loans_edition_id")
    assert names.index("validate_fk_loans_edition_id") < names.index("index_idx_loans_open_by_member")
    assert names[-1] == "analyze"
    assert plan.legacy_columns == (("books", "publisher"), ("books", "price"), ("books", "copies"))
    assert plan.new_tables == ("publishers", "editions") and plan.tables == ("books", "loans")
    # The child takes the parent key's type, and 32-bit integers widen.
    table = next(s for s in plan.steps if s.name == "table_editions")
    ddl = table.ddl()[0].sql
    assert "book_isbn text NOT NULL REFERENCES public.books (isbn)" in ddl and "copies bigint NOT NULL" in ddl
    # The walks go by each table's own key.
    # loans is copied with edition_id filled and swapped in, by its own key (in place where a table
    # cannot be rebuilt).
    walk = next(s for s in plan.steps if s.name == "backfill_loans_edition_id")
    assert isinstance(walk, RebuildTable) and walk.referenced == ("books",)
    assert walk.pk.column == "id" and walk.pk.sqltype == "integer"
    assert walk.in_place.key.column == "id" and walk.in_place.key.sqltype == "integer"  # type: ignore[attr-defined]


def test_blog_plan_assembles() -> None:
    blog = Catalog({"posts": TableInfo("id", "bigint", {"id": "bigint", "title": "text", "author_name": "text",
                                                        "tag": "text", "published_at": "timestamp with time zone"}),
                    "comments": TableInfo("id", "bigint", {"id": "bigint", "author_name": "text"})})
    plan = assemble(load(PLANS / "blog.toml"), blog)
    assert ("comments", "author_name") in plan.legacy_columns and ("posts", "tag") in plan.legacy_columns
    assert {c.name for c in plan.constraints} >= {"fk_posts_author_id", "fk_comments_author_id",
                                                   "chk_posts_title_not_blank"}


def test_an_operation_on_a_table_the_plan_creates_does_not_make_it_an_existing_table() -> None:
    """A check on a split's child names a table that does not exist before the run: the run would
    refuse it as missing."""
    spec = parse('version = 1\nname = "x"\n'
                 '[[operation]]\ntype = "split_child"\nparent = "books"\nchild = "editions"\ncolumns = ["copies"]\n'
                 '[[operation]]\ntype = "add_check"\ntable = "editions"\nname = "chk_copies"\ncheck = "copies >= 0"\n'
                 '[[operation]]\ntype = "create_index"\ntable = "editions"\nname = "idx_copies"\ncolumns = ["copies"]\n')
    assert spec.tables() == ["books"] and spec.new_tables() == ["editions"]
    plan = assemble(spec, LIBRARY)
    assert plan.tables == ("books",)
    assert {"constraint_chk_copies", "validate_chk_copies", "index_idx_copies"} <= {s.name for s in plan.steps}
