"""Render room: the same rows as a terminal table, markdown, CSV or JSON, numbers with their units."""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "markdown", "csv", "json")

# How a column reads in the human formats; machine formats (csv, json) keep raw values and names.
PERCENT = {"wer", "cer", "delta_wer", "size_reduction", "quantized_param_share", "wer_ci_low", "wer_ci_high",
           "qoi", "identical_rate"}
BYTES = {"model_size_bytes", "baseline_size_bytes", "peak_mem_bytes"}
SECONDS = {"latency_p50_s", "latency_p90_s", "load_s", "quantize_s", "compute_s"}
RATIO = {"speedup"}


def human(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in PERCENT:
        return f"{value * 100:+.2f}%" if column == "delta_wer" else f"{value * 100:.2f}%"
    if column in BYTES:
        return f"{value / 1e6:.1f} MB"
    if column in SECONDS:
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if column in RATIO:
        return f"{value:.2f}x"
    if column == "rtf":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, title: str | None = None) -> str:
    if fmt == "json":
        return json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")  # the csv module's default is CRLF
        writer.writerow(columns)
        writer.writerows(rows)
        return out.getvalue().removesuffix("\n")  # the caller prints the last line end
    cells = [[human(c, v) for c, v in zip(columns, r)] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
        return (f"### {title}\n\n" if title else "") + "\n".join(lines)
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, header_style="bold")
        for c in columns:
            table.add_column(c, justify="right" if rows and isinstance(rows[0][columns.index(c)], (int, float)) else "left")
        for r in cells:
            table.add_row(*r)
        console = Console(width=240, record=True, file=io.StringIO())
        console.print(table)
        return console.export_text()
    raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")


def flatten(tables: Sequence[Any]) -> tuple[list[str], list[tuple]]:
    """Several tables' raw rows as one: the union of their columns in first-seen order, missing ones null."""
    columns: list[str] = []
    for table in tables:
        columns += [c for c in table.columns if c not in columns]
    rows = [tuple(dict(zip(t.columns, r)).get(c) for c in columns) for t in tables for r in t.rows]
    return columns, rows


def render_tables(tables: Sequence[Any], fmt: str, empty: str = "no rows") -> str:
    """`results.tables.Table`s: machine formats get one flat table of raw values, human ones each table titled."""
    if fmt in ("csv", "json"):
        return render(*flatten(tables), fmt)
    if not any(t.rows for t in tables):
        return empty
    parts = []
    for table in tables:
        text = render(table.human_columns, table.human_rows, fmt, title=table.title)
        if table.notes and fmt == "markdown":
            text += "\n\n" + "\n".join(f"- {note}" for note in table.notes) + "\n"
        elif table.notes:
            text += "\n".join(table.notes) + "\n"
        parts.append(text)
    return "\n".join(parts)
