"""Tests of trainforge.core.registry.filters: filter text -> SQL and parameters (pure), then what the
compiled SQL selects from a real PostgreSQL holding a small registry (needs TF_TEST_DSN)."""

from __future__ import annotations

import importlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from trainforge.core.errors import InvalidArgument
from trainforge.core.registry.filters import MAX_DEPTH, MAX_FILTER_LENGTH, CompiledFilter, compile_filter

UTC = timezone.utc
METRIC = "(CASE WHEN jsonb_typeof(v.metrics -> %s) = 'number' THEN (v.metrics ->> %s)::double precision END)"
ALIASED = "EXISTS (SELECT 1 FROM model_aliases a WHERE a.version_id = v.id AND a.alias = %s)"

# -- filter -> (sql, params) --------------------------------------------------------------------

COMPILED = [
    ("", "TRUE", ()),
    ("  \t\n ", "TRUE", ()),
    ('name = "llama-7b"', "m.name = %s", ("llama-7b",)),
    ("name=llama-7b", "m.name = %s", ("llama-7b",)),
    ("version != v2", "v.version != %s", ("v2",)),
    ("version = 1.0", "v.version = %s", ("1.0",)),  # a bare number is text for a string field
    ("model_type >= causal", "v.model_type >= %s", ("causal",)),
    ("name:Llama", "m.name ILIKE %s", ("%Llama%",)),
    # \, % and _ in the value match themselves, not LIKE's wildcards.
    (r'name:"50%_off\\"', "m.name ILIKE %s", (r"%50\%\_off\\%",)),
    ("description:chat", "v.description ILIKE %s", ("%chat%",)),
    ("description = ''", "v.description = %s", ("",)),
    ("tags:nlp", "%s = ANY(v.tags || m.tags)", ("nlp",)),
    ("tags = nlp", "%s = ANY(v.tags || m.tags)", ("nlp",)),
    ("tags != old", "NOT (%s = ANY(v.tags || m.tags))", ("old",)),
    ("aliases:prod", ALIASED, ("prod",)),
    ("alias = prod", ALIASED, ("prod",)),
    ("alias != prod", "NOT " + ALIASED, ("prod",)),
    ("size_mb < 100", "v.size_mb < %s", (100,)),
    ("size_mb <= 0.5", "v.size_mb <= %s", (0.5,)),
    ("parameter_count >= 7e9", "v.parameter_count >= %s", (7e9,)),
    ("parameter_count = 9007199254740993", "v.parameter_count = %s", (9007199254740993,)),  # stays exact
    ("metrics.accuracy > 0.9", f"COALESCE({METRIC} > %s, false)", ("accuracy", "accuracy", 0.9)),
    ("performance_metrics.lr <= 5e-5", f"COALESCE({METRIC} <= %s, false)", ("lr", "lr", 5e-5)),
    ("metrics.loss>-1", f"COALESCE({METRIC} > %s, false)", ("loss", "loss", -1)),
    ("metrics:accuracy", "jsonb_exists(v.metrics, %s)", ("accuracy",)),
    ('performance_metrics:"f1"', "jsonb_exists(v.metrics, %s)", ("f1",)),
    ('create_time >= "2024-01-31T12:00:00Z"', "v.create_time >= %s", (datetime(2024, 1, 31, 12, tzinfo=UTC),)),
    ("create_time < 2024-01-31T12:00:00.5+02:00", "v.create_time < %s",
     (datetime(2024, 1, 31, 12, 0, 0, 500000, tzinfo=timezone(timedelta(hours=2))),)),
    # Precedence: AIP-160's OR binds tighter than AND, and juxtaposition is AND.
    ("name = a AND version = b OR model_type = c", "(m.name = %s AND (v.version = %s OR v.model_type = %s))",
     ("a", "b", "c")),
    ("name = a version = b OR model_type = c", "(m.name = %s AND (v.version = %s OR v.model_type = %s))",
     ("a", "b", "c")),
    ("name = a OR version = b AND model_type = c", "((m.name = %s OR v.version = %s) AND v.model_type = %s)",
     ("a", "b", "c")),
    ("(name = a AND version = b) OR model_type = c", "((m.name = %s AND v.version = %s) OR v.model_type = %s)",
     ("a", "b", "c")),
    ("name = a version = b AND model_type = c", "(m.name = %s AND v.version = %s AND v.model_type = %s)",
     ("a", "b", "c")),
    # NOT and - take one term.
    ("NOT name = a OR -version = b", "(NOT (m.name = %s) OR NOT (v.version = %s))", ("a", "b")),
    ("NOT (name = a OR name = b)", "NOT (m.name = %s OR m.name = %s)", ("a", "b")),
    ("-tags:x", "NOT (%s = ANY(v.tags || m.tags))", ("x",)),
    ("NOT metrics.x > 1", f"NOT (COALESCE({METRIC} > %s, false))", ("x", "x", 1)),
    # Strings and escapes; hostile text is only ever a parameter.
    ("name = 'it\\'s'", "m.name = %s", ("it's",)),
    (r'name = "a\"b\\c\nd\te"', "m.name = %s", ('a"b\\c\nd\te',)),
    ("name = \"x' OR 1=1 --\"", "m.name = %s", ("x' OR 1=1 --",)),
    ("name = 'x\" OR TRUE; DROP TABLE models; --'", "m.name = %s", ('x" OR TRUE; DROP TABLE models; --',)),
    ('name = "AND"', "m.name = %s", ("AND",)),
    ("name = true", "m.name = %s", ("true",)),
]


@pytest.mark.parametrize(("text", "sql", "params"), COMPILED, ids=[c[0] or "<empty>" for c in COMPILED])
def test_compiles_to_sql_and_params(text, sql, params):
    compiled = compile_filter(text)
    assert compiled == CompiledFilter(sql, params)
    assert compiled.sql.count("%s") == len(compiled.params)


def test_user_values_never_reach_the_sql_text():
    compiled = compile_filter("name = \"x' OR 1=1 --\" tags:\"'); DROP TABLE models; --\" metrics.loss < 1")
    assert "OR 1=1" not in compiled.sql and "DROP" not in compiled.sql and "'loss'" not in compiled.sql


def test_limits_are_inclusive():
    at_limit = "name = " + "x" * (MAX_FILTER_LENGTH - len("name = "))
    assert compile_filter(at_limit).params == ("x" * (MAX_FILTER_LENGTH - 7),)
    deepest = "(" * MAX_DEPTH + "name = a" + ")" * MAX_DEPTH
    assert compile_filter(deepest) == CompiledFilter("m.name = %s", ("a",))


# -- filters that must be rejected --------------------------------------------------------------

BAD = [
    ("foo = 1", 'unsupported field "foo" at offset 0; supported: name, version, model_type'),
    ("name = a AND Name = b", 'unsupported field "Name" at offset 13'),
    ("description.x = 1", 'unsupported field "description.x" at offset 0'),
    ("name = ", 'expected a value after "=" at offset 5, found end of filter'),
    ("name = (a OR b)", 'expected a value after "=" at offset 5, found "(" at offset 7'),
    ("size_mb > big", 'field "size_mb" at offset 0 compares numbers, but the word "big" at offset 10 is not a number'),
    ('size_mb > "5"', 'the quoted string "5" at offset 10 is not a number'),
    ("parameter_count = true", 'the word "true" at offset 18 is not a number'),
    ("metrics.accuracy > high", 'the word "high" at offset 19 is not a number'),
    ("size_mb:5", 'operator ":" at offset 7 is not supported for field "size_mb"; use one of =, !=, <, <=, >, >='),
    ("tags > a", 'operator ">" at offset 5 is not supported for field "tags"; use one of =, !=, :'),
    ("description < x", 'operator "<" at offset 12 is not supported for field "description"'),
    ("alias >= prod", 'operator ">=" at offset 6 is not supported for field "alias"'),
    ("create_time:2024", 'operator ":" at offset 11 is not supported for field "create_time"'),
    ("create_time > yesterday", '"yesterday" at offset 14 is not one'),
    ('create_time > "2024-13-01T00:00:00Z"', 'needs an RFC 3339 timestamp with a time zone'),
    ('create_time > "2024-01-01"', '"2024-01-01" at offset 14 is not one'),
    ('create_time > "2024-01-01T00:00:00"', "with a time zone"),
    ("metrics = 1", '"metrics" at offset 0 needs a metric name'),
    ("metrics.accuracy:x", "to test that the metric is there, write metrics:accuracy"),
    ("metrics.acc-uracy > 1", 'metric name "acc-uracy" at offset 8 must be letters, digits and _ only'),
    ("metrics. > 1", 'metric name "" at offset 8'),
    ("metrics:\"a') OR 1=1 --\"", "metric name \"a') OR 1=1 --\" at offset 8"),
    ("(name = a", 'unbalanced parentheses: "(" at offset 0 is never closed'),
    ("((name = a)", 'unbalanced parentheses: "(" at offset 0 is never closed'),
    ("name = a)", 'unbalanced parentheses: ")" at offset 8 has no "(" to close'),
    ("(name = a = b)", 'expected ")" to close "(" at offset 0, found "=" at offset 10'),
    ("name = a = b", 'unexpected "=" at offset 9 after a complete comparison'),
    ("name = a b", 'expected an operator (=, !=, <, <=, >, >= or :) after "b" at offset 9, found end of filter'),
    ("llama", 'after "llama" at offset 0, found end of filter; free-text terms are not supported'),
    ("name = a and version = b",
     'after "and" at offset 9, found "version" at offset 13; AND, OR and NOT are operators only in upper case'),
    ("name = a AND", 'expected a comparison after "AND" at offset 9, found end of filter'),
    ("AND name = a", 'expected a comparison, found "AND" at offset 0'),
    ("name = a OR OR name = b", 'expected a comparison after "OR" at offset 9, found "OR" at offset 12'),
    ("NOT", 'expected a comparison after "NOT" at offset 0, found end of filter'),
    ("NOT NOT name = a", 'expected a comparison after "NOT" at offset 0, found "NOT" at offset 4'),
    ("name = a -", 'expected a comparison after "-" at offset 9, found end of filter'),
    ("()", 'expected a comparison after "(" at offset 0, found ")" at offset 1'),
    ('"llama"', 'expected a field name at offset 0, found the string "llama" at offset 0'),
    ('name = "abc', "unterminated string starting at offset 7"),
    ("name = 'abc\\'", "unterminated string starting at offset 7"),
    ('name = "a\\qb"', 'unknown escape "\\q" at offset 9'),
    ("name ! a", '"!" at offset 5 must be followed by "="'),
    ("name = a\x00", "NUL character at offset 8"),
    ("name = " + "x" * (MAX_FILTER_LENGTH - 6),
     f"the filter is {MAX_FILTER_LENGTH + 1} characters long; the limit is 2048"),
    ("(" * (MAX_DEPTH + 1) + "name = a" + ")" * (MAX_DEPTH + 1),
     f"parentheses nest deeper than 32 levels at offset {MAX_DEPTH}"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[0][:40] for b in BAD])
def test_rejects_bad_filters_saying_what_and_where(text, expected):
    with pytest.raises(InvalidArgument) as info:
        compile_filter(text)
    violations = info.value.violations
    assert [v.field for v in violations] == ["filter"] * len(violations)
    assert expected in violations[0].description, violations[0].description


def test_reports_every_field_problem_at_once():
    with pytest.raises(InvalidArgument) as info:
        compile_filter('foo = 1 AND size_mb > x OR create_time > "soon" tags > a')
    descriptions = [v.description for v in info.value.violations]
    assert len(descriptions) == 4, descriptions
    for fragment, description in zip(('"foo" at offset 0', '"x" at offset 22', '"soon" at offset 41',
                                      'operator ">" at offset 53'), descriptions):
        assert fragment in description


# -- against a real PostgreSQL ------------------------------------------------------------------

@pytest.fixture(scope="module")
def filter_dsn(postgres_cluster) -> str:
    """A database in the suite's private PostgreSQL cluster (tests/pg_fixtures.py)."""
    return postgres_cluster.new_database("filters")


def _registry_schema_sql() -> list[str]:
    """The SQL of the first migration, captured by standing in for alembic's `op`."""
    migration = importlib.import_module("trainforge.core.db.migrations.versions.0001_registry")
    statements: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(migration, "op", SimpleNamespace(execute=statements.append))
        migration.upgrade()
    return statements


# model name -> model tags
MODELS = {"llama_7b": ["base"], "llamax7b": [], "gpt-100%-tuned": ["gpt"], "gpt-1000": ["gpt", "legacy"]}
# (model, version, model_type, size_mb, parameter_count, metrics, version tags, create_time, description)
VERSIONS = [
    ("llama_7b", "v1", "causal-lm", 13000, 7_000_000_000, {"accuracy": 0.91, "loss": 0.3}, ["nlp"],
     "2024-01-10T00:00:00Z", "first release"),
    ("llama_7b", "v2", "causal-lm", 13500, 7_000_000_000, {"accuracy": 0.95}, ["nlp", "experimental"],
     "2024-03-01T00:00:00Z", "instruction tuned"),
    ("llamax7b", "v1", "causal-lm", 14000, 7_200_000_000, {"loss": 0.5}, [], "2024-02-01T00:00:00Z", ""),
    # A metric stored as a string must make comparisons false, not abort the query.
    ("gpt-100%-tuned", "v1", "seq2seq", 500, 120_000_000, {"accuracy": "high"}, ["chat"],
     "2024-02-15T00:00:00Z", "100% tuned on chat_logs"),
    ("gpt-1000", "v1", "seq2seq", 400, 100_000_000, {"accuracy": 0.7}, [], "2023-12-01T00:00:00Z",
     "tuned on chatXlogs"),
    ("gpt-1000", "v2", "seq2seq", 450, 100_000_000, {}, ["nlp"], "2024-04-01T00:00:00Z", ""),
]
ALIASES = [("llama_7b", "prod", "v1"), ("llama_7b", "staging", "v2"), ("gpt-1000", "prod", "v1")]
ALL = {f"{model} {version}" for model, version, *_ in VERSIONS}


@pytest.fixture(scope="module")
def registry(filter_dsn):
    """A connection whose search_path is a fresh schema holding the registry tables and the rows above;
    the schema is dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"tf_filters_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(filter_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
        try:
            conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
            for statement in _registry_schema_sql():
                conn.execute(statement)
            model_ids = {name: uuid.uuid4() for name in MODELS}
            version_ids = {}
            for name, tags in MODELS.items():
                conn.execute("INSERT INTO models (id, name, tags, etag) VALUES (%s, %s, %s, 'e')",
                             (model_ids[name], name, tags))
            for model, version, model_type, size, params, metrics, tags, created, description in VERSIONS:
                version_ids[model, version] = uuid.uuid4()
                conn.execute(
                    "INSERT INTO model_versions (id, model_id, version, model_type, size_mb, parameter_count,"
                    " metrics, tags, create_time, description, etag)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, 'e')",
                    (version_ids[model, version], model_ids[model], version, model_type, size, params,
                     json.dumps(metrics), tags, datetime.fromisoformat(created), description))
            for model, alias, version in ALIASES:
                conn.execute("INSERT INTO model_aliases (model_id, alias, version_id) VALUES (%s, %s, %s)",
                             (model_ids[model], alias, version_ids[model, version]))
            yield conn
        finally:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


def _matching(conn, text: str) -> set[str]:
    compiled = compile_filter(text)
    rows = conn.execute("SELECT m.name || ' ' || v.version FROM model_versions v"
                        " JOIN models m ON m.id = v.model_id WHERE " + compiled.sql, compiled.params).fetchall()
    return {row[0] for row in rows}


SELECTS = [
    ("", ALL),
    ("name = llama_7b", {"llama_7b v1", "llama_7b v2"}),
    ('name:"a_7"', {"llama_7b v1", "llama_7b v2"}),  # _ is literal: llamax7b does not match
    ('name:"100%"', {"gpt-100%-tuned v1"}),  # % is literal: gpt-1000 does not match
    ("name:LLAMA", {"llama_7b v1", "llama_7b v2", "llamax7b v1"}),
    ('description:"chat_logs"', {"gpt-100%-tuned v1"}),
    ("tags:nlp", {"llama_7b v1", "llama_7b v2", "gpt-1000 v2"}),
    ("tags:gpt", {"gpt-100%-tuned v1", "gpt-1000 v1", "gpt-1000 v2"}),  # a model's tag counts for its versions
    ("tags != experimental", ALL - {"llama_7b v2"}),
    ("aliases:prod", {"llama_7b v1", "gpt-1000 v1"}),
    ("alias != prod", ALL - {"llama_7b v1", "gpt-1000 v1"}),
    ("metrics.accuracy > 0.9", {"llama_7b v1", "llama_7b v2"}),
    ("NOT metrics.accuracy > 0.9", ALL - {"llama_7b v1", "llama_7b v2"}),  # lacking accuracy counts as "not > 0.9"
    ("metrics.accuracy != 0.95", {"llama_7b v1", "gpt-1000 v1"}),  # != needs the metric
    ("metrics:loss", {"llama_7b v1", "llamax7b v1"}),
    ("-performance_metrics:accuracy", {"llamax7b v1", "gpt-1000 v2"}),
    ("metrics.loss < 5e-1", {"llama_7b v1"}),
    ("metrics.loss > -1", {"llama_7b v1", "llamax7b v1"}),
    # AIP-160: a AND b OR c is a AND (b OR c); SQL's precedence would add the three gpt versions.
    ("name = llama_7b AND metrics.accuracy > 0.93 OR tags:gpt", {"llama_7b v2"}),
    ("name = llama_7b metrics.accuracy > 0.93 OR tags:gpt", {"llama_7b v2"}),
    ("(name = llama_7b AND metrics.accuracy > 0.93) OR tags:gpt",
     {"llama_7b v2", "gpt-100%-tuned v1", "gpt-1000 v1", "gpt-1000 v2"}),
    ("NOT (tags:gpt OR aliases:prod)", {"llama_7b v2", "llamax7b v1"}),
    ('create_time >= "2024-02-01T00:00:00Z" AND create_time < 2024-03-01T00:00:00Z',
     {"llamax7b v1", "gpt-100%-tuned v1"}),
    ("create_time < 2024-01-10T01:00:00Z", {"llama_7b v1", "gpt-1000 v1"}),
    ("create_time < 2024-01-10T01:00:00+02:00", {"gpt-1000 v1"}),  # 23:00 UTC the day before
    ("size_mb > 13000 parameter_count < 7100000000", {"llama_7b v2"}),
    ("parameter_count < 99999999999999999999", ALL),  # beyond bigint: compared as numeric, no error
    ("model_type = seq2seq AND version = v2", {"gpt-1000 v2"}),
]
INJECTIONS = [
    "name = \"x' OR 1=1 --\"",
    "name = \"llama_7b' OR '1'='1\"",
    "tags:\"nlp' OR 'a'='a\"",
    "description:\"'; DROP TABLE models; --\"",
]
SELECTS += [(text, set()) for text in INJECTIONS]


@pytest.mark.parametrize(("text", "expected"), SELECTS, ids=[s[0] or "<empty>" for s in SELECTS])
def test_selects_exactly_the_matching_versions(registry, text, expected):
    assert _matching(registry, text) == expected


def test_injection_attempts_leave_the_tables_alone(registry):
    for text in INJECTIONS:
        _matching(registry, text)
    assert _matching(registry, "") == ALL
