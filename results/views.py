"""The leaderboard's named views (the registry `leaderboard --view` and `--preset` choose from)."""
from __future__ import annotations

from collections.abc import Callable

import duckdb

from results.race_view import race
from results.tables import (Table, cross_hardware, hardware, ladder, pareto, per_device, seed003, seed_table,
                            support)

BUILDERS: dict[str, Callable[[duckdb.DuckDBPyConnection, str | None], list[Table]]] = {
    "per-device": per_device, "cross-hardware": cross_hardware, "ladder": ladder, "pareto": pareto,
    "support": support, "hardware": hardware, "race": race, "seed-table": seed_table, "seed003": seed003,
}
VIEWS = ("per-device", "cross-hardware", "ladder", "pareto", "support", "hardware", "race")
