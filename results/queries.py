"""Query room: DuckDB views over the Parquet results (SQL files in results/sql/) and read-only SQL."""
from __future__ import annotations

from importlib import resources
import duckdb

from results.schema import TABLES
from results.store import Store

# Views in dependency order; each is one file in results/sql/.
VIEWS = ("trials", "utterances", "baselines", "leaderboard")


class QueryError(ValueError):
    """A query that cannot run (bad SQL, writes, unknown results directory)."""


def _sql(name: str) -> str:
    return resources.files("results").joinpath("sql", f"{name}.sql").read_text()


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the results' views; the Parquet files themselves are only read."""
    root = store.local_path
    if root is None:
        raise QueryError(f"{store.root}: DuckDB reads local results directories; sync remote ones first")
    con = duckdb.connect(":memory:")
    for table, schema in TABLES.items():
        files = list((root / f"table={table}").glob("*/*.parquet"))
        if files:
            glob = str(root / f"table={table}" / "*" / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {table}_files AS SELECT * FROM read_parquet('{glob}', "
                        "hive_partitioning = true, union_by_name = true)")
        else:  # an empty results directory still answers every query, with no rows
            con.register(f"{table}_empty", schema.empty_table())
            con.execute(f"CREATE VIEW {table}_files AS SELECT *, NULL::VARCHAR AS \"table\" FROM {table}_empty")
    for view in VIEWS:
        con.execute(_sql(view))
    return con


def query(store: Store, sql: str) -> duckdb.DuckDBPyRelation:
    """Run user SQL over the views; anything but a read is refused."""
    con = connect(store)
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {exc}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError("only one read-only SELECT (or WITH ... SELECT) statement is allowed")
    try:
        return con.sql(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
