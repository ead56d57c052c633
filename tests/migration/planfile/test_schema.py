"""plans/plan.schema.json: a valid draft 2020-12 schema, generated from spec.py's readers (the committed
file is the generator's output), that every plan meets and that agrees with spec.parse on what a plan
may say: the same operations, the same keys, the same required keys, the same bad plans."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from villager_shop.migration.planfile import schema as plan_schema
from villager_shop.migration.planfile import spec

PLANS = Path(__file__).resolve().parents[3] / "plans"
SCHEMA_FILE = PLANS / "plan.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"


def toml(top: dict[str, Any], operations: list[dict[str, Any]]) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for op in operations:
        lines += ["", "[[operation]]", *(f"{k} = {toml_value(v)}" for k, v in op.items())]
    return "\n".join(lines) + "\n"


def verdicts(validator: Draft202012Validator, text: str) -> tuple[bool, bool]:
    """(the schema accepts the plan, spec.parse accepts it)."""
    by_schema = validator.is_valid(tomllib.loads(text))
    try:
        spec.parse(text)
        by_spec = True
    except spec.PlanError:
        by_spec = False
    return by_schema, by_spec


def minimal(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """An operation of `kind` with its required keys only, each set to the schema's example."""
    d = schema["$defs"][kind]
    return {"type": kind, **{k: d["properties"][k]["examples"][0] for k in d["required"] if k != "type"}}


# (a) -----------------------------------------------------------------------------------------------


def test_the_schema_is_a_valid_draft_2020_12_schema(schema: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_key_has_a_description_and_an_example_that_the_schema_accepts(schema: dict[str, Any]) -> None:
    objects = {"plan": schema, **{k: v for k, v in schema["$defs"].items() if v.get("type") == "object"
                                  and "properties" in v and k != "operation"}}
    for name, obj in objects.items():
        assert obj["additionalProperties"] is False, name
        for key, prop in obj["properties"].items():
            assert prop.get("description"), (name, key)
            if "examples" in prop:
                sub = {**{k: v for k, v in prop.items() if k not in ("description", "examples")},
                       "$defs": schema["$defs"]}
                for example in prop["examples"]:
                    assert Draft202012Validator(sub).is_valid(example), (name, key, example)


# (b) -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PLANS.glob("*.toml")), ids=lambda p: p.name)
def test_every_plan_meets_the_schema_and_names_it_on_its_first_line(path: Path, validator: Draft202012Validator) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "#:schema ./plan.schema.json"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(tomllib.loads(text))]
    assert errors == []
    spec.parse(text, str(path))


# (c) -----------------------------------------------------------------------------------------------


def test_the_committed_schema_is_what_spec_py_generates() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == plan_schema.schema_text(), (
        "plans/plan.schema.json is stale: villager-shop migrate plan --schema > plans/plan.schema.json")


def test_the_schema_and_spec_py_name_the_same_operations(schema: dict[str, Any]) -> None:
    op = schema["$defs"]["operation"]
    assert op["properties"]["type"]["enum"] == list(spec.OPERATIONS) == sorted(spec.READERS, key=spec.OPERATIONS.index)
    assert [b["$ref"].rsplit("/", 1)[1] for b in op["oneOf"]] == list(spec.OPERATIONS)
    for kind in spec.OPERATIONS:
        assert schema["$defs"][kind]["properties"]["type"]["const"] == kind


@pytest.mark.parametrize("kind", spec.OPERATIONS)
def test_the_schema_and_spec_parse_agree_on_every_key_of(kind: str, schema: dict[str, Any],
                                                         validator: Draft202012Validator) -> None:
    d = schema["$defs"][kind]
    base = minimal(schema, kind)
    # the required keys alone: both accept
    assert verdicts(validator, toml({}, [base])) == (True, True)
    # each optional key (its example) added: both accept
    for key, prop in d["properties"].items():
        if key not in d["required"]:
            assert verdicts(validator, toml({}, [{**base, key: prop["examples"][0]}])) == (True, True), key
    # each required key left out: both refuse
    for key in d["required"]:
        if key != "type":
            assert verdicts(validator, toml({}, [{k: v for k, v in base.items() if k != key}])) == (False, False), key
    # a key neither knows: both refuse
    assert verdicts(validator, toml({}, [{**base, "colour": "red"}])) == (False, False)


def test_the_schema_and_spec_parse_agree_on_the_top_level_and_the_sources(schema: dict[str, Any],
                                                                          validator: Draft202012Validator) -> None:
    op = minimal(schema, "quarantine_rule")
    for key, prop in schema["properties"].items():
        if key != "operation":
            assert verdicts(validator, toml({key: prop["examples"][0]}, [op])) == (True, True), key
    assert verdicts(validator, toml({"colour": "red"}, [op])) == (False, False)
    assert schema["required"] == ["operation"]
    assert verdicts(validator, toml({"name": "x"}, [])) == (False, False)
    src = schema["$defs"]["source"]
    lookup = minimal(schema, "extract_lookup")
    for key in src["required"]:
        sources = [{k: v for k, v in lookup["sources"][0].items() if k != key}]
        assert verdicts(validator, toml({}, [{**lookup, "sources": sources}])) == (False, False), key
    sources = [{**lookup["sources"][0], "colour": "red"}]
    assert verdicts(validator, toml({}, [{**lookup, "sources": sources}])) == (False, False)


def test_the_generator_refuses_a_schema_out_of_step_with_spec_py(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {**plan_schema.KEYS, "create_index": {k: v for k, v in plan_schema.KEYS["create_index"].items()
                                                 if k != "include"}}
    monkeypatch.setattr(plan_schema, "KEYS", keys)
    with pytest.raises(RuntimeError, match="create_index reads"):
        plan_schema.json_schema()
    monkeypatch.setattr(plan_schema, "SOURCE", {k: v for k, v in plan_schema.SOURCE.items() if k != "fk"})
    monkeypatch.setattr(plan_schema, "KEYS", plan_schema.KEYS | {"create_index": plan_schema.KEYS["create_index"]})
    with pytest.raises(RuntimeError, match="out of step"):
        plan_schema.json_schema()


# (d) -----------------------------------------------------------------------------------------------

BAD = {
    "unknown operation": '[[operation]]\ntype = "drop_table"\ntable = "posts"\n',
    "no operation": 'name = "x"\noperation = []\n',
    "name not a plain SQL name": '[[operation]]\ntype = "quarantine_rule"\ntable = "Posts"\nreason = "r"\nwhen = "true"\n',
    "name too long": f'[[operation]]\ntype = "quarantine_rule"\ntable = "{"t" * 64}"\nreason = "r"\nwhen = "true"\n',
    "two statements": '[[operation]]\ntype = "quarantine_rule"\ntable = "t"\nreason = "r"\nwhen = "true; DROP TABLE t"\n',
    "a comment": '[[operation]]\ntype = "add_check"\ntable = "t"\nname = "c"\ncheck = "a > 0 -- positive"\n',
    "empty expression": '[[operation]]\ntype = "quarantine_rule"\ntable = "t"\nreason = "r"\nwhen = "  "\n',
    "unknown normalizer": '[[operation]]\ntype = "extract_lookup"\nlookup = "l"\nnormalizer = "lower"\n'
                          'sources = [{ table = "t", column = "c" }]\n',
    "empty sources": '[[operation]]\ntype = "extract_lookup"\nlookup = "l"\nsources = []\n',
    "bad on_delete": '[[operation]]\ntype = "add_foreign_key"\ntable = "t"\nname = "f"\ncolumns = ["a"]\n'
                     'references = "u"\non_delete = "DROP"\n',
    "unique not a boolean": '[[operation]]\ntype = "create_index"\ntable = "t"\nname = "i"\ncolumns = ["a"]\nunique = "yes"\n',
    "index item not a column": '[[operation]]\ntype = "create_index"\ntable = "t"\nname = "i"\ncolumns = ["lower(a)"]\n',
    "split columns not names": '[[operation]]\ntype = "split_child"\nparent = "p"\nchild = "c"\ncolumns = [1, 2]\n',
    "version 2": 'version = 2\n[[operation]]\ntype = "quarantine_rule"\ntable = "t"\nreason = "r"\nwhen = "true"\n',
    "functions not text": 'functions = [1]\n[[operation]]\ntype = "quarantine_rule"\ntable = "t"\nreason = "r"\nwhen = "true"\n',
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_a_bad_plan_fails_both_the_schema_and_spec_parse(text: str, validator: Draft202012Validator) -> None:
    assert verdicts(validator, text) == (False, False)


def test_letter_case_where_spec_parse_ignores_it(validator: Draft202012Validator) -> None:
    text = ('[[operation]]\ntype = "add_foreign_key"\ntable = "t"\nname = "f"\ncolumns = "a"\nreferences = "u"\n'
            'on_delete = "Set Null"\n\n[[operation]]\ntype = "create_index"\ntable = "t"\nname = "i"\n'
            'columns = ["a desc nulls last", " b "]\n')
    assert verdicts(validator, text) == (True, True)
