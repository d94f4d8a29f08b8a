"""Query room: DuckDB views over the Parquet results (SQL files in results/sql/) and read-only SQL."""
from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from results.schema import LEADERBOARD_COLUMNS, TABLES
from results.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from results.store import Store

# Views in dependency order; each is one file in results/sql/.
VIEWS = ("trials", "utterances", "scores", "run_scores", "scored", "baselines", "stats", "stats_pending", "prices",
         "leaderboard", "pareto", "ladder", "support_matrix", "hardware")
# Small tables read once per connection, so that every leaderboard query runs on memory, not on files.
MATERIALIZED = ("trials", "run_scores", "stats", "prices")
# A query may list a file that compaction removes before DuckDB opens it; listing again finds its part file.
QUERY_ATTEMPTS = 5
T = TypeVar("T")


class QueryError(ValueError):
    """A query that cannot run (bad SQL, writes, unknown results directory)."""


def _sql(name: str) -> str:
    """A view's SQL; `{metric_columns}` (and `{t.metric_columns}`) lists the metrics' registered columns, each
    followed by a comma, so that a new metric reaches the leaderboard without touching its SQL."""
    text = resources.files("results").joinpath("sql", f"{name}.sql").read_text()
    return (text.replace("{t.metric_columns}", "".join(f"t.{c}, " for c in LEADERBOARD_COLUMNS))
                .replace("{metric_columns}", "".join(f"{c}, " for c in LEADERBOARD_COLUMNS)))


def _files_view(con: duckdb.DuckDBPyConnection, store: Store, table: str) -> None:
    """`<table>_files`: every row of every file, in the current schema whatever version wrote the file.

    The empty typed table is unioned by name so that columns added since a file was written read as
    NULL, with the current type, even when no file has them yet.
    """
    con.register(f"{table}_current", TABLES[table].empty_table())
    root = store.local_path / f"table={table}"
    sources = [f"SELECT * FROM {table}_current"]
    if any(root.glob("*/*.parquet")):
        glob = str(root / "*" / "*.parquet").replace("'", "''")
        # No hive partitioning: every file carries its sweep, and a sweep named "2024" must stay text.
        sources.append(f"SELECT * FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false)")
    kind = "TABLE" if table in MATERIALIZED else "VIEW"
    _retrying(lambda: con.execute(f"CREATE OR REPLACE {kind} {table}_files AS " + " UNION ALL BY NAME ".join(sources)))
    if table in MATERIALIZED:
        con.unregister(f"{table}_current")


def connect(store: Store, scoring: str = "latest", resamples: int = DEFAULT_RESAMPLES,
            seed: int = DEFAULT_SEED) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the results' views; the Parquet files themselves are only read.

    `scoring` picks the scoring version the views use (see sql/scored.sql); `resamples` and `seed` which
    cached bootstrap statistics the leaderboard shows.
    """
    if store.local_path is None:
        raise QueryError(f"{store.root}: DuckDB reads local results directories; sync remote ones first")
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # the CLI's output is the tables, not DuckDB's progress
    con.execute("CREATE TABLE settings AS SELECT ?::VARCHAR AS scoring, ?::INTEGER AS resamples, ?::BIGINT AS seed",
                [scoring, resamples, seed])
    for table in TABLES:
        _files_view(con, store, table)
    for view in VIEWS:
        con.execute(_sql(view))
    _sandbox(con, store.local_path)
    return con


def _sandbox(con: duckdb.DuckDBPyConnection, results: Path) -> None:
    """From here on the connection reads the results directory and nothing else, and cannot be unlocked.

    Views read their Parquet files when queried, so that directory stays allowed; any other file, a URL,
    installing or loading an extension, or changing a setting is refused by DuckDB itself.
    """
    con.execute("SET allowed_directories = ?", [[str(results.resolve()) + "/"]])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET allow_community_extensions = false")
    con.execute("SET lock_configuration = true")


def scorings(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The scoring versions present, oldest first."""
    rows = con.sql("SELECT scoring FROM run_scores GROUP BY scoring ORDER BY max(scored_at), scoring").fetchall()
    return [r[0] for r in rows]


def _retrying(run: Callable[[], T]) -> T:
    for attempt in range(QUERY_ATTEMPTS):
        try:
            return run()
        except duckdb.IOException:
            if attempt == QUERY_ATTEMPTS - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Column names and rows of a query; retried when a file vanished under it (a compaction ran)."""
    def run() -> tuple[list[str], list[tuple]]:
        relation = con.sql(sql, params=params)
        return relation.columns, relation.fetchall()
    return _retrying(run)


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pa.Table:
    return _retrying(lambda: con.sql(sql, params=params).to_arrow_table())


def query(store: Store, sql: str, scoring: str = "latest") -> tuple[list[str], list[tuple]]:
    """Run user SQL over the views: its column names and rows; anything but a read of the results is refused."""
    con = connect(store, scoring)
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {exc}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError("only one read-only SELECT (or WITH ... SELECT) statement is allowed")
    try:
        return fetch(con, sql)
    except duckdb.PermissionException as exc:
        raise QueryError(f"{exc} (queries read only the results directory {store.local_path}: no other files, "
                         "URLs, extensions or settings)") from None
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
