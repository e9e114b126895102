"""The read-only SQL console: a lead's query on the catalog, run only if it can only read.

Entry point: `run_query(con, sql)`. DuckDB lets a process open a file once, so the console cannot
take a read-only connection beside the dashboard's read-write one; instead each query is checked
before it runs: exactly one statement, of type SELECT, whose parse tree reads only the catalog's
tables, views and table macros (never a file path, a file reader such as read_csv, another
database or the password hashes in `users`) and calls no function with a side effect. It then
runs on its own cursor in a transaction that is rolled back, is stopped after `timeout` seconds
and returns at most `max_rows` rows.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import pandas as pd

from core import catalog, users

MAX_ROWS = 1000
TIMEOUT_S = 10.0
HIDDEN_TABLES = frozenset({"users"})  # password hashes stay out of the console
SAFE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "duckdb_tables",
                                  "duckdb_views", "duckdb_columns"})
SIDE_EFFECT_FUNCTIONS = frozenset({"nextval", "setseed"})
SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog"})


class QueryRefused(catalog.CatalogError):
    """The text is not a single read of the catalog; nothing ran."""


class QueryFailed(catalog.CatalogError):
    """The query was allowed but DuckDB failed it or it ran out of time."""


@dataclass(frozen=True)
class QueryResult:
    frame: pd.DataFrame      # at most max_rows rows
    truncated: bool          # the query had more rows than max_rows
    seconds: float


def _single_select(sql: str) -> str:
    """The one SELECT statement in `sql`, or QueryRefused saying why not."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise QueryRefused(f"not valid SQL: {err}") from err
    if len(statements) != 1:
        raise QueryRefused(f"one statement at a time: the text holds {len(statements)} "
                           "(only a single SELECT runs here)")
    kind = statements[0].type.name
    if kind != "SELECT":
        raise QueryRefused(f"only reads run here: the statement is {kind}, not SELECT")
    return statements[0].query


def _parse_tree(con, query: str) -> dict:
    text = catalog._one(con.execute("SELECT json_serialize_sql(?)", [query]))[0]
    tree = json.loads(text)
    if tree.get("error"):
        raise QueryRefused(f"only reads run here: {tree.get('error_message')}")
    return tree


def _nodes(value) -> Iterator[dict]:
    """Every dict in a parse tree, depth first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nodes(item)


@dataclass(frozen=True)
class _Names:
    relations: frozenset      # tables and views a query may read (lower case)
    table_macros: frozenset
    functions: frozenset      # every function DuckDB knows now
    database: str


def _catalog_names(con) -> _Names:
    relations = {r[0].lower() for r in con.execute("""SELECT table_name FROM duckdb_tables()
        WHERE database_name = current_database() UNION SELECT view_name FROM duckdb_views()
        WHERE database_name = current_database() AND NOT internal""").fetchall()}
    functions = con.execute("""SELECT DISTINCT lower(function_name), function_type = 'table_macro'
        AND database_name = current_database() FROM duckdb_functions()""").fetchall()
    return _Names(frozenset(relations - HIDDEN_TABLES),
                  frozenset(name for name, macro in functions if macro),
                  frozenset(name for name, _ in functions),
                  catalog._one(con.execute("SELECT current_database()"))[0])


def _cte_names(tree: dict) -> set[str]:
    """Names the query defines with WITH: readable like tables."""
    maps = [node["cte_map"].get("map", []) for node in _nodes(tree)
            if isinstance(node.get("cte_map"), dict)]
    return {entry["key"].lower() for entries in maps for entry in entries
            if isinstance(entry, dict) and "key" in entry}


def _check_table(node: dict, names: _Names, ctes: set[str]) -> None:
    name, schema = node.get("table_name", ""), (node.get("schema_name") or "").lower()
    if node.get("catalog_name") not in ("", None, names.database):
        raise QueryRefused("only the catalog can be read, not the database "
                           f"{node['catalog_name']!r}")
    if schema in SYSTEM_SCHEMAS:
        return
    if name.lower() in HIDDEN_TABLES:
        raise QueryRefused(f"the table {name!r} is not open to the console (it holds password "
                           "hashes); the audit page shows account changes")
    if name.lower() not in names.relations and name.lower() not in ctes:
        raise QueryRefused(f"{name!r} is not a table or view of the catalog (files and other "
                           "sources cannot be read here)")


def _check_table_function(node: dict, names: _Names) -> None:
    name = node["function"]["function_name"].lower()
    if name not in SAFE_TABLE_FUNCTIONS and name not in names.table_macros:
        raise QueryRefused(f"the table function {name}() cannot run here: it may read files or "
                           "other sources (allowed: the catalog's macros and "
                           f"{', '.join(sorted(SAFE_TABLE_FUNCTIONS))})")


def check_query(con, sql: str) -> str:
    """The query text if `sql` is a single read of the catalog; else raise QueryRefused."""
    query = _single_select(sql)
    tree = _parse_tree(con, query)
    names, ctes = _catalog_names(con), _cte_names(tree)
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            _check_table(node, names, ctes)
        elif kind == "TABLE_FUNCTION":
            _check_table_function(node, names)
        elif kind == "SHOW_REF" and node.get("query") is None \
                and node.get("show_type") != "SHOW_SPECIAL":
            raise QueryRefused("only SHOW TABLES, and DESCRIBE or SUMMARIZE of a table or query, "
                               "run here")
        if node.get("class") == "FUNCTION":
            name = node["function_name"].lower()
            if name in SIDE_EFFECT_FUNCTIONS:
                raise QueryRefused(f"{name}() changes the catalog's state: it cannot run here")
            if name not in names.functions:
                raise QueryRefused(f"unknown function {name}()")
    return query


def _rollback(cursor) -> None:
    try:
        cursor.rollback()
    except duckdb.Error:
        pass  # an interrupted or failed query has already ended the transaction


def run_query(con, sql: str, *, user: str | None = None, max_rows: int = MAX_ROWS,
              timeout: float = TIMEOUT_S) -> QueryResult:
    """Check `sql` (raise QueryRefused), run it on a cursor of `con` in a transaction that is
    rolled back, and return its first `max_rows` rows; QueryFailed when DuckDB fails it or it
    runs longer than `timeout` seconds. `user` needs the 'sql' permission (a lead)."""
    users.require(con, user, "sql")
    query = check_query(con, sql)
    cursor = con.cursor()
    timer = threading.Timer(timeout, cursor.interrupt)
    started = time.perf_counter()
    try:
        cursor.begin()
        timer.start()
        result = cursor.execute(query)
        rows = result.fetchmany(max_rows + 1)
        columns = [d[0] for d in result.description]
    except duckdb.InterruptException as err:
        raise QueryFailed(f"the query ran longer than {timeout:g} s and was stopped") from err
    except duckdb.Error as err:
        raise QueryFailed(str(err)) from err
    finally:
        timer.cancel()
        _rollback(cursor)
        cursor.close()
    frame = pd.DataFrame(rows[:max_rows], columns=pd.Index(columns))
    return QueryResult(frame, len(rows) > max_rows, time.perf_counter() - started)
