"""Store room: atomic Parquet writes, the results directory's layout, and reading what is done."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results.schema import TABLES, table_from_rows

# Layout (Hive partitions, so DuckDB prunes by table and sweep):
#   <root>/table=trials/sweep=<sweep>/<trial_id>.parquet
#   <root>/table=utterances/sweep=<sweep>/<trial_id>.parquet
# One file per trial and table, replaced atomically on re-run; `compact` merges them into part-*.parquet.


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
        """Utterances first, the trial row last: a trial file present means its utterances are too."""
        self._write(table_from_rows("utterances", utterances), self.table_dir("utterances", sweep), trial_id)
        self._write(table_from_rows("trials", [row]), self.table_dir("trials", sweep), trial_id)

    def _write(self, table: pa.Table, directory: str, name: str) -> None:
        fs, _ = self.fs_and_path
        fs.create_dir(directory, recursive=True)
        final = f"{directory}/{name}.parquet"
        temporary = f"{directory}/{name}.{uuid.uuid4().hex}.parquet.tmp"
        with fs.open_output_stream(temporary) as out:
            pq.write_table(table, out)
        fs.move(temporary, final)  # a rename: readers see the old file or the new one, never half of one

    def read(self, table: str, sweep: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """All rows of a table (of one sweep), in the current schema; older files get nulls for new columns."""
        fs, _ = self.fs_and_path
        directory = self.table_dir(table, sweep)
        info = fs.get_file_info(directory)
        schema = TABLES[table]
        if info.type == pafs.FileType.NotFound:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        selector = pafs.FileSelector(directory, recursive=True)
        files = [f.path for f in fs.get_file_info(selector) if f.path.endswith(".parquet")]
        dataset = ds.dataset(files, schema=schema, filesystem=fs, format="parquet")
        return dataset.to_table(columns=columns)

    def finished(self, sweep: str) -> dict[str, str]:
        """trial_id -> status of the latest run of every trial recorded for the sweep."""
        table = self.read("trials", sweep, ["trial_id", "status", "finished_at"]).sort_by("finished_at")
        return dict(zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist()))
