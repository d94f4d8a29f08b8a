"""Store room: atomic Parquet writes, the results directory's layout, and reading what is done."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import uuid
from datetime import datetime, timezone
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results.schema import KEYS, STATUSES, TABLES, table_from_rows, with_columns_of

# Layout (Hive partitions, so DuckDB prunes by table and sweep):
#   <root>/table=trials/sweep=<sweep>/<trial_id>.parquet
#   <root>/table=utterances/sweep=<sweep>/<trial_id>.parquet
#   <root>/table=scores/sweep=<sweep>/<scoring>.parquet       (re-scorings, per utterance)
#   <root>/table=run_scores/sweep=<sweep>/<scoring>.parquet   (re-scorings, per run)
#   <root>/table=stats/sweep=<sweep>/stats-<uuid>.parquet     (cached bootstrap statistics)
# One file per trial and table, replaced atomically on re-run; `compact` merges them into part-*.parquet.
# Readers must tolerate the same row in a part file and a per-trial file (views and `finished` dedupe).
PART_PREFIX = "part-"
# Part files above this size are left alone: merging them again would only rewrite the same rows.
SETTLED_PART_BYTES = 256 * 2**20
# A per-trial file is renamed to this suffix before it is deleted, so a re-run landing meanwhile is seen.
MERGING_SUFFIX = ".merging"
READ_ATTEMPTS = 5
# Files read per task when compaction spreads the reading over processes.
READ_CHUNK = 1000


@dataclass
class Compaction:
    """What one `compact` did: files merged into new part files, and files kept because they changed."""

    merged_files: int = 0
    part_files: int = 0
    rows: int = 0
    kept_changed: list[str] = field(default_factory=list)


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which version of a file this is: a re-run's rename gives a new inode, size or mtime."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _set_aside(path: Path) -> Path:
    """A name for content that must stay visible but cannot go back to its own name."""
    return path.with_name(f"{path.name.split('.')[0]}.{uuid.uuid4().hex}.parquet")


def _remove_if_unchanged(path: Path, merged: tuple[int, int, int]) -> bool:
    """Delete `path` only if it is still the version that was merged; a re-run's newer file is never lost."""
    if _identity(path) != merged:
        return False
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}{MERGING_SUFFIX}")
    try:
        os.rename(path, aside)  # atomic: from here on a writer's rename creates a fresh `path`
    except FileNotFoundError:
        return False
    if _identity(aside) == merged:
        aside.unlink()
        return True
    # A re-run landed between the check and the rename: we moved unmerged content; put it back.
    try:
        os.link(aside, path)
    except FileExistsError:  # an even newer run is at `path` already; keep this one visible too
        os.rename(aside, _set_aside(path))
        return False
    aside.unlink()
    return False


TRIAL_FILE = re.compile(rf"(?P<trial_id>[0-9a-f]{{16}})\.(?P<status>{'|'.join(STATUSES)})\.parquet")


@dataclass(frozen=True)
class Store:
    """A results directory: a local path or any pyarrow.fs URI (file://, s3://, gs://)."""

    root: str

    @property
    def fs_and_path(self) -> tuple[pafs.FileSystem, str]:
        if "://" in self.root:
            return pafs.FileSystem.from_uri(self.root)
        return pafs.LocalFileSystem(), str(Path(self.root).resolve())

    @property
    def local_path(self) -> Path | None:
        """A path DuckDB can read directly (local directories and file:// URIs)."""
        fs, path = self.fs_and_path
        return Path(path) if isinstance(fs, pafs.LocalFileSystem) else None

    def table_dir(self, table: str, sweep: str | None = None) -> str:
        _, path = self.fs_and_path
        base = f"{path}/table={table}"
        return f"{base}/sweep={sweep}" if sweep else base

    def write_trial(self, sweep: str, trial_id: str, row: dict[str, Any], utterances: list[dict[str, Any]]) -> None:
        """Utterances first, the trial row last: a trial file present means its utterances are too.

        The trial file is named `<trial_id>.<status>.parquet`, so what is done can be read from a directory
        listing (`finished`) instead of thousands of footers; a re-run's file replaces the earlier one.
        """
        self._write(table_from_rows("utterances", utterances), self.table_dir("utterances", sweep), trial_id)
        directory = self.table_dir("trials", sweep)
        status = row["status"]
        self._write(table_from_rows("trials", [row]), directory, f"{trial_id}.{status}")
        fs, _ = self.fs_and_path
        for other in STATUSES:
            if other != status:
                try:
                    fs.delete_file(f"{directory}/{trial_id}.{other}.parquet")
                except FileNotFoundError:
                    pass

    def write_scores(self, sweep: str, scoring: str, utterance_scores: pa.Table, run_scores: pa.Table) -> None:
        """A re-scoring of a sweep: per-utterance counts first, per-run totals last (their presence means done)."""
        self._write(utterance_scores.cast(TABLES["scores"]), self.table_dir("scores", sweep), scoring)
        self._write(run_scores.cast(TABLES["run_scores"]), self.table_dir("run_scores", sweep), scoring)

    def write_stats(self, sweep: str, stats: pa.Table) -> None:
        self._write(stats.cast(TABLES["stats"]), self.table_dir("stats", sweep), f"stats-{uuid.uuid4().hex}")

    def write_prices(self, sweep: str, prices: dict[str, float], currency: str | None) -> None:
        """(issue 15) The spec's prices as this run states them (an empty set too: prices removed from a spec
        stop applying); the views take the latest set of each sweep."""
        written_at = datetime.now(timezone.utc)
        rows = [{"sweep": sweep, "written_at": written_at, "position": i,
                 "kind": "chip" if target.startswith("chip:") else "class",
                 "pattern": target.removeprefix("chip:"), "price_per_hour": price, "currency": currency}
                for i, (target, price) in enumerate(prices.items())]
        if not rows:  # an empty set still says "no prices since this run"
            rows = [{"sweep": sweep, "written_at": written_at, "position": -1, "kind": "none", "currency": currency}]
        table = table_from_rows("prices", rows)
        if self._same_prices(sweep, table):
            return  # a resumed run of the same spec writes nothing
        self._write(table, self.table_dir("prices", sweep), "prices")

    def _same_prices(self, sweep: str, table: pa.Table) -> bool:
        fs, _ = self.fs_and_path
        path = f"{self.table_dir('prices', sweep)}/prices.parquet"
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return False
        with fs.open_input_file(path) as f:
            stored = pq.read_table(f)
        columns = [c for c in table.column_names if c != "written_at"]
        return stored.select(columns).to_pylist() == table.select(columns).to_pylist()

    def _write(self, table: pa.Table, directory: str, name: str) -> None:
        fs, _ = self.fs_and_path
        fs.create_dir(directory, recursive=True)
        final = f"{directory}/{name}.parquet"
        temporary = f"{directory}/{name}.{uuid.uuid4().hex}.parquet.tmp"
        with fs.open_output_stream(temporary) as out:
            pq.write_table(table, out)
        fs.move(temporary, final)  # a rename: readers see the old file or the new one, never half of one

    def write_run_state(self, sweep: str, state: dict[str, Any]) -> None:
        """The driver's note of a sweep in progress (`quantsweep status` reads it): <root>/_runs/<sweep>.json."""
        fs, path = self.fs_and_path
        fs.create_dir(f"{path}/_runs", recursive=True)
        temporary = f"{path}/_runs/{sweep}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(temporary) as out:
            out.write(json.dumps(state, default=str).encode())
        fs.move(temporary, f"{path}/_runs/{sweep}.json")

    def run_states(self) -> dict[str, dict[str, Any]]:
        fs, path = self.fs_and_path
        if fs.get_file_info(f"{path}/_runs").type == pafs.FileType.NotFound:
            return {}
        states = {}
        for info in fs.get_file_info(pafs.FileSelector(f"{path}/_runs")):
            if info.path.endswith(".json"):
                with fs.open_input_stream(info.path) as f:
                    states[info.base_name.removesuffix(".json")] = json.loads(f.read())
        return states

    def read(self, table: str, sweep: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """All rows of a table (of one sweep), in the current schema; older files get nulls for new columns."""
        fs, _ = self.fs_and_path
        directory = self.table_dir(table, sweep)
        info = fs.get_file_info(directory)
        schema = TABLES[table]
        if info.type == pafs.FileType.NotFound:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        for attempt in range(READ_ATTEMPTS):
            selector = pafs.FileSelector(directory, recursive=True)
            files = [f.path for f in fs.get_file_info(selector) if f.path.endswith(".parquet")]
            try:
                found = ds.dataset(files[:1], filesystem=fs, format="parquet").schema
                dataset = ds.dataset(files, schema=with_columns_of(table, found), filesystem=fs, format="parquet")
                return dataset.to_table(columns=columns)
            except FileNotFoundError:  # compaction merged and removed a file after we listed it: list again
                if attempt == READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def finished(self, sweep: str) -> dict[str, str]:
        """trial_id -> status of the latest run of every trial recorded for the sweep.

        Per-trial files say it in their names; only part files (and files compaction set aside) are read.
        A per-trial file is never older than a merged row of the same trial, so its name wins.
        """
        fs, _ = self.fs_and_path
        directory = self.table_dir("trials", sweep)
        if fs.get_file_info(directory).type == pafs.FileType.NotFound:
            return {}
        named: dict[str, str] = {}
        others = []
        for info in fs.get_file_info(pafs.FileSelector(directory)):
            if match := TRIAL_FILE.fullmatch(info.base_name):
                if named.get(match["trial_id"]) != "ok":  # two names for one trial: a crash mid-replace
                    named[match["trial_id"]] = match["status"]
            elif info.base_name.endswith(".parquet"):
                others.append(info.path)
        merged: dict[str, str] = {}
        if others:
            table = ds.dataset(others, schema=TABLES["trials"], filesystem=fs, format="parquet").to_table(
                columns=["trial_id", "status", "finished_at"]).sort_by("finished_at")
            merged = dict(zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist()))
        return merged | named

    def unsupported_for(self, sweep: str, error_type: str) -> set[str]:
        """Trials whose latest run is `unsupported` with this error_type (e.g. a package missing on the node);
        only their own files and part files are read."""
        unsupported = {trial for trial, status in self.finished(sweep).items() if status == "unsupported"}
        if not unsupported:
            return set()
        fs, _ = self.fs_and_path
        files = []
        for info in fs.get_file_info(pafs.FileSelector(self.table_dir("trials", sweep))):
            match = TRIAL_FILE.fullmatch(info.base_name)
            if match and match["status"] == "unsupported" or not match and info.base_name.endswith(".parquet"):
                files.append(info.path)
        rows = ds.dataset(files, schema=TABLES["trials"], filesystem=fs, format="parquet").to_table(
            columns=["trial_id", "status", "error_type", "finished_at"]).sort_by("finished_at").to_pylist()
        latest = {r["trial_id"]: r["error_type"] for r in rows if r["status"] == "unsupported"}
        return {trial for trial in unsupported if latest.get(trial) == error_type}

    def compact(self) -> Compaction:
        """Merge each table's per-trial files (and small part files) of each sweep into one part file.

        Atomic and idempotent: the part file is written under a temporary name and renamed; a merged
        file is deleted only if it is still the version that was read (a re-run may replace it meanwhile,
        and then it stays). Safe while a sweep writes: readers may see a row twice, never miss one.
        """
        root = self.local_path
        if root is None:
            raise ValueError(f"{self.root}: compaction works on local results directories")
        report = Compaction()
        for table in TABLES:
            for sweep_dir in sorted((root / f"table={table}").glob("sweep=*")):
                self._compact_sweep(table, sweep_dir, report)
        return report

    def _compact_sweep(self, table: str, directory: Path, report: Compaction) -> None:
        for leftover in directory.glob(f"*{MERGING_SUFFIX}"):  # a compaction that died mid-delete
            os.rename(leftover, _set_aside(leftover))
        # Identity before reading: if a file changes after this, the delete check sees it and keeps it.
        found = {p: ident for p in sorted(directory.glob("*.parquet")) if (ident := _identity(p)) is not None}
        merged = {p: ident for p, ident in found.items()
                  if not p.name.startswith(PART_PREFIX) or ident[1] < SETTLED_PART_BYTES}
        if all(p.name.startswith(PART_PREFIX) for p in merged) and len(merged) <= 1:
            return  # already compact
        rows = self._read_files(table, list(merged))
        self._write(rows, str(directory), f"{PART_PREFIX}{uuid.uuid4().hex}")
        report.part_files += 1
        report.rows += rows.num_rows
        for path, ident in merged.items():
            if _remove_if_unchanged(path, ident):
                report.merged_files += 1
            elif path.exists():
                report.kept_changed.append(str(path))

    def _read_files(self, table: str, paths: list[Path]) -> pa.Table:
        """Rows of these files in the current schema, one per key (a row may sit in a part and a per-trial file)."""
        chunks = [paths[i:i + READ_CHUNK] for i in range(0, len(paths), READ_CHUNK)]
        if len(chunks) > 1:  # decoding a small file's footer costs ~2 ms of CPU: spread thousands over the cores
            with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
                parts = list(pool.map(read_conformed, [table] * len(chunks), chunks))
        else:
            parts = [read_conformed(table, paths)]
        con = duckdb.connect(":memory:")
        con.execute("SET enable_progress_bar = false")
        con.register("merged", pa.concat_tables(parts))
        keys = ", ".join(KEYS[table])
        rows = con.sql(f"SELECT * FROM merged QUALIFY row_number() OVER (PARTITION BY {keys}) = 1").to_arrow_table()
        return rows.cast(with_columns_of(table, rows.schema))


def read_conformed(table: str, paths: list[Path]) -> pa.Table:
    """Files of any schema version as one table of the current schema (columns a file lacks are null).

    A file gone meanwhile (another compactor merged it) is left out: its identity check then keeps nothing.
    """
    parts = []
    for path in paths:
        try:
            parts.append(pq.ParquetFile(path).read(use_threads=False))
        except FileNotFoundError:
            continue
    if not parts:
        return TABLES[table].empty_table()
    rows = pa.concat_tables(parts, promote_options="permissive")
    schema = with_columns_of(table, rows.schema)
    # one chunk per column: a table of a thousand tiny chunks is slow to send between processes and to scan
    rows = rows.combine_chunks()
    return pa.table({f.name: rows[f.name].cast(f.type) if f.name in rows.column_names
                     else pa.nulls(rows.num_rows, f.type) for f in schema}, schema=schema)
