"""Tables room: the views as titled tables (per device, cross-hardware, seed Table 1, RTF ladder, Pareto
fronts, support matrix, hardware), raw values for machines and cells with units and marks for people.

Hardware is a class, then a chip and a host group within it: results are ranked and compared per chip and host
group (two chips of one class are two columns, two tables, never one ranking); the leaderboard's `hardware`
names one by all three."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from results.queries import fetch

PRESETS = ("seed-table", "seed003")

LEGEND_SIGNIFICANCE = "~ ΔWER not significant at 5% (paired bootstrap over utterances)"
LEGEND_TIMING = "! timing not exclusive, or its CV over repeats is above 5%"
LEGEND_FRONT = "front: on the Pareto front of WER vs size and/or WER vs RTF for this hardware and dataset"
HARDWARE = ("hw_class", "hw_chip", "host_group")  # a class, and within it a chip and a host group


@dataclass
class Table:
    """One titled table: `columns`/`rows` raw (csv, json), `human_columns`/`human_rows` with units."""

    title: str
    columns: list[str]
    rows: list[tuple]
    human_columns: list[str] = field(default_factory=list)
    human_rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def pct(value: Any, digits: int = 2, sign: bool = False) -> str:
    if missing(value):
        return "-"
    return f"{value * 100:+.{digits}f}%" if sign else f"{value * 100:.{digits}f}%"


def megabytes(value: Any) -> str:
    return "-" if missing(value) else f"{value / 1e6:.1f} MB"


def millis(value: Any) -> str:
    return "-" if missing(value) else f"{value * 1000:.0f} ms"


def times(value: Any) -> str:
    return "-" if missing(value) else f"{value:.2f}x"


def number(value: Any, digits: int = 3) -> str:
    return "-" if missing(value) else f"{value:.{digits}f}"


def wer_with_interval(row: dict) -> str:
    if missing(row["wer"]):
        return "-"
    if missing(row["wer_ci_low"]):
        return pct(row["wer"])
    return f"{pct(row['wer'])} [{row['wer_ci_low'] * 100:.2f}–{row['wer_ci_high'] * 100:.2f}]"


def delta_cell(row: dict) -> str:
    """ΔWER with `~` when the paired bootstrap cannot tell it from 0 at 5%."""
    if row.get("is_baseline"):
        return "baseline"
    text = pct(row["delta_wer"], sign=True)
    return f"{text} ~" if row.get("significant") is False else text


def rtf_cell(row: dict) -> str:
    """RTF, its spread over repeats, and `!` when the timing cannot be trusted."""
    text = number(row["rtf"])
    if not missing(row.get("rtf_cv")):
        text += f" ±{row['rtf_cv'] * 100:.1f}%"
    return f"{text} !" if row.get("timing_noisy") else text


def front_cell(row: dict) -> str:
    return "+".join(axis for axis, on in (("size", row["on_pareto_size"]), ("rtf", row["on_pareto_rtf"])) if on)


def cost_cell(row: dict) -> str:
    """(issue 15) price x RTF in the spec's currency ("-" where the spec priced no such machine)."""
    if missing(row["cost_per_audio_hour"]):
        return "-"
    return f"{row['cost_per_audio_hour']:.4f}" + (f" {row['currency']}" if row["currency"] else "")


def yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _rows(con: duckdb.DuckDBPyConnection, sql: str, sweep: str | None) -> tuple[list[str], list[dict]]:
    columns, rows = fetch(con, sql.format(where="WHERE sweep = ?" if sweep else ""), [sweep] if sweep else [])
    return columns, [dict(zip(columns, r)) for r in rows]


def hardware_names(keys: set[tuple]) -> dict[tuple, str]:
    """Each (class, chip, host group) in as few words as tell it from the others shown beside it: its class,
    then its chip where the class has several, then its host group where the chip has several."""
    names = {}
    for hw_class, chip, group in keys:
        chips = {k[1] for k in keys if k[0] == hw_class}
        groups = {k[2] for k in keys if k[:2] == (hw_class, chip)}
        names[(hw_class, chip, group)] = (hw_class + (f" · {chip}" if len(chips) > 1 else "")
                                          + (f" · {group}" if len(groups) > 1 else ""))
    return names


def _hardware_order(key: tuple) -> tuple:
    return tuple("" if part is None else str(part) for part in key)


def _grouped(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


PER_DEVICE_CELLS: list[tuple[str, Callable[[dict], str]]] = [
    ("rank", lambda r: str(r["rank"])),
    ("model", lambda r: r["model"]),
    ("quantization", lambda r: r["quantization"]),
    ("WER [95% CI]", wer_with_interval),
    ("ΔWER", delta_cell),
    ("p", lambda r: number(r["delta_wer_p"])),
    ("CER", lambda r: pct(r["cer"])),
    ("RTF", rtf_cell),
    ("speed-up", lambda r: times(r["speedup"])),
    ("p50", lambda r: millis(r["latency_p50_s"])),
    ("p90", lambda r: millis(r["latency_p90_s"])),
    ("size", lambda r: megabytes(r["model_size_bytes"])),
    ("size red.", lambda r: pct(r["size_reduction"], 1)),
    ("peak mem", lambda r: megabytes(r["peak_mem_bytes"])),
    ("QoI", lambda r: pct(r["qoi"], 1)),
    ("99%", lambda r: yes_no(r["meets_99pct"])),
    ("identical", lambda r: pct(r["identical_rate"], 1)),
    ("KL", lambda r: number(r["kl_to_baseline"], 4)),
    ("top-1", lambda r: pct(r["top1_agreement"], 1)),
    ("cost/audio h", lambda r: cost_cell(r)),
    ("core-h/audio h", lambda r: number(r["core_hours_per_audio_hour"])),
    ("front", front_cell),
]


def per_device(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """One table per dataset and hardware (class, chip, host group), ranked by WER."""
    columns, rows = _rows(con, "SELECT * FROM leaderboard {where} ORDER BY dataset, hw_class, hw_chip, host_group, "
                               "rank, model, quantization", sweep)
    tables = []
    for (dataset, hardware), group in _grouped(rows, ("dataset", "hardware")).items():
        tables.append(Table(
            f"{dataset} on {hardware} (scoring {', '.join(sorted({r['scoring'] for r in group}))})", columns,
            [tuple(r[c] for c in columns) for r in group],
            [name for name, _ in PER_DEVICE_CELLS], [[cell(r) for _, cell in PER_DEVICE_CELLS] for r in group],
            [LEGEND_SIGNIFICANCE, LEGEND_TIMING, LEGEND_FRONT]))
    return tables


def _method_order(row: dict) -> tuple:
    return (row["model"], not row["is_baseline"], row["quantization"])


def cross_hardware(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """Per dataset: one row per (model, quantization), one column group (WER, RTF, size) per hardware: a class,
    and within it each chip and host group (raw columns `<hardware>.<metric>`, the leaderboard's `hardware`)."""
    _, rows = _rows(con, "SELECT * FROM leaderboard {where} ORDER BY dataset, hw_class, hw_chip, host_group", sweep)
    tables = []
    for (dataset,), group in _grouped(rows, ("dataset",)).items():
        labels = {tuple(r[k] for k in HARDWARE): r["hardware"] for r in group}
        hardware = sorted(labels, key=_hardware_order)
        names = hardware_names(set(hardware))
        cells = {(r["model"], r["quantization"], tuple(r[k] for k in HARDWARE)): r for r in group}
        methods = sorted({(r["model"], r["quantization"]): r for r in group}.values(), key=_method_order)
        columns = ["dataset", "model", "quantization"] + [f"{labels[hw]}.{m}" for hw in hardware for m in
                                                          ("wer", "delta_wer_p", "rtf", "model_size_bytes")]
        raw, human = [], []
        for m in methods:
            per_class = [cells.get((m["model"], m["quantization"], hw)) for hw in hardware]
            raw.append(tuple([dataset, m["model"], m["quantization"]] + [
                None if c is None else c[k] for c in per_class for k in ("wer", "delta_wer_p", "rtf",
                                                                         "model_size_bytes")]))
            human.append([m["model"], m["quantization"]] + [
                text for c in per_class for text in (
                    ("-", "-", "-") if c is None else
                    (pct(c["wer"]) + (" ~" if c["significant"] is False and not c["is_baseline"] else ""), rtf_cell(c),
                     megabytes(c["model_size_bytes"])))])
        human_columns = ["model", "quantization"] + [f"{names[hw]} {m}" for hw in hardware for m in ("WER", "RTF", "size")]
        tables.append(Table(f"{dataset}: across hardware", columns, raw, human_columns, human,
                            [LEGEND_SIGNIFICANCE, LEGEND_TIMING]))
    return tables


def _method_label(row: dict) -> str:
    if row["is_baseline"]:
        return f"Baseline ({row['scheme']})"
    kind = "" if row["dynamic"] is None else (" (dyn.)" if row["dynamic"] else " (stat.)")
    return f"{row['quantization']}{kind}"


def seed_table(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """The seed study's Table 1: device sections (a class, or a chip and host group of it) of methods; WER and
    CER per dataset, RTF, size reduction.

    RTF is over all datasets (compute seconds / audio seconds), as the study reports one per method.
    """
    _, rows = _rows(con, "SELECT * FROM leaderboard {where} ORDER BY model, hw_class, hw_chip, host_group, dataset",
                    sweep)
    tables = []
    for (model,), group in _grouped(rows, ("model",)).items():
        datasets = sorted({r["dataset"] for r in group})
        columns = ([*HARDWARE, "model", "method"] + [f"wer.{d}" for d in datasets] + [f"cer.{d}" for d in datasets]
                   + ["rtf", "size_reduction"])
        raw, human = [], []
        devices = _grouped(group, HARDWARE)
        names = hardware_names(set(devices))
        for (hw_class, chip, host_group), by_class in devices.items():
            section = names[(hw_class, chip, host_group)]
            human.append([hw_class.upper() + section[len(hw_class):]] + [""] * (2 * len(datasets) + 2))
            for _, runs in sorted(_grouped(by_class, ("quantization",)).items(),
                                  key=lambda item: _method_order(item[1][0])):
                by_dataset = {r["dataset"]: r for r in runs}
                audio = sum(r["audio_seconds"] or 0 for r in runs if not missing(r["rtf"]))
                rtf = (sum(r["rtf"] * (r["audio_seconds"] or 0) for r in runs if not missing(r["rtf"])) / audio
                       if audio else None)
                first = runs[0]
                wers = [by_dataset[d]["wer"] if d in by_dataset else None for d in datasets]
                cers = [by_dataset[d]["cer"] if d in by_dataset else None for d in datasets]
                raw.append(tuple([hw_class, chip, host_group, model, _method_label(first)] + wers + cers
                                 + [rtf, first["size_reduction"]]))
                marks = [" ~" if d in by_dataset and by_dataset[d]["significant"] is False and not first["is_baseline"]
                         else "" for d in datasets]
                size_reduction = "" if first["is_baseline"] else pct(first["size_reduction"], 0)
                human.append([_method_label(first)] + [pct(w) + m for w, m in zip(wers, marks)]
                             + [pct(c) for c in cers] + [number(rtf), size_reduction])
        human_columns = (["Device/Method"] + [f"WER {d}" for d in datasets] + [f"CER {d}" for d in datasets]
                         + ["RTF", "Size Red."])
        tables.append(Table(f"{model}: quantized models against the fp32 baseline", columns, raw, human_columns,
                            human, [LEGEND_SIGNIFICANCE]))
    return tables


def tera(value: Any) -> str:
    return "-" if missing(value) else f"{value / 1e12:.2f} T"


def bits_cell(value: Any) -> str:
    return "-" if missing(value) else ("float" if value >= 32 else str(value))


SEED003_CELLS: list[tuple[str, Callable[[dict], str]]] = [
    ("method", lambda r: r["quantization"] + (" *" if r["simulated"] else "")),
    ("W", lambda r: bits_cell(r["weight_bits"])),
    ("A", lambda r: bits_cell(r["act_bits"])),
    ("WER", lambda r: pct(r["wer"])),
    ("ΔWER", delta_cell),
    ("p", lambda r: number(r["delta_wer_p"])),
    ("KL", lambda r: number(r["kl_to_baseline"], 4)),
    ("top-1", lambda r: pct(r["top1_agreement"], 1)),
    ("BOPs", lambda r: tera(r["bops"])),
    ("memory I/O", lambda r: megabytes(r["mem_io_bytes"])),
    ("size (packed)", lambda r: megabytes(r["analytic_size_bytes"])),
    ("size (saved)", lambda r: megabytes(r["model_size_bytes"])),
]
SEED003_COLUMNS = ("model", *HARDWARE, "dataset", "quantization", "library", "scheme", "weight_bits", "act_bits",
                   "simulated", "wer", "delta_wer", "delta_wer_p", "kl_to_baseline", "top1_agreement", "bops",
                   "mem_io_bytes", "analytic_size_bytes", "model_size_bytes")


def seed003(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """Seed 003's layout: per model, hardware and dataset, methods by weight/activation bits with accuracy,
    KL drift and the analytic costs (BOPs, memory I/O, packed size) beside the saved size."""
    _, rows = _rows(con, "SELECT * FROM leaderboard {where} ORDER BY model, hw_class, hw_chip, host_group, dataset",
                    sweep)
    tables = []
    for (model, hardware, dataset), group in _grouped(rows, ("model", "hardware", "dataset")).items():
        group.sort(key=lambda r: (not r["is_baseline"], -(r["weight_bits"] or 0), -(r["act_bits"] or 0),
                                  r["quantization"]))
        tables.append(Table(f"{model} on {hardware}, {dataset}: methods by weight/activation bits", list(SEED003_COLUMNS),
                            [tuple(r[c] for c in SEED003_COLUMNS) for r in group], [n for n, _ in SEED003_CELLS],
                            [[cell(r) for _, cell in SEED003_CELLS] for r in group],
                            [LEGEND_SIGNIFICANCE, "* simulated: rounded to the grid, stored and run in float32; "
                             "BOPs, memory I/O and packed size are analytic (README)"]))
    return tables


LADDER_CELLS: list[tuple[str, Callable[[dict], str]]] = [
    ("step", lambda r: str(r["step"])),
    ("quantization", lambda r: r["quantization"]),
    ("runtime", lambda r: r["runtime"] or "torch"),
    ("RTF", rtf_cell),
    ("speed-up", lambda r: times(r["speedup"])),
    ("p50", lambda r: millis(r["latency_p50_s"])),
    ("WER", lambda r: pct(r["wer"])),
    ("ΔWER", delta_cell),
    ("identical (raw)", lambda r: pct(r["identical_raw_rate"], 1)),
    ("identical (norm.)", lambda r: pct(r["identical_normalized_rate"], 1)),
    ("size", lambda r: megabytes(r["model_size_bytes"])),
    ("size red.", lambda r: pct(r["size_reduction"], 1)),
    ("cost/audio h", lambda r: cost_cell(r)),
    ("core-h/audio h", lambda r: number(r["core_hours_per_audio_hour"])),
    ("computed on", lambda r: r["runtime_device"] or "-"),
]


def ladder(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """Seed 000's view: per model, hardware and dataset, the quantizations from fastest to slowest."""
    columns, rows = _rows(con, "SELECT * FROM ladder {where} ORDER BY model, hw_class, hw_chip, host_group, dataset, "
                               "step", sweep)
    return [Table(f"{model} on {hardware}, {dataset}: RTF ladder", columns, [tuple(r[c] for c in columns) for r in g],
                  [n for n, _ in LADDER_CELLS], [[cell(r) for _, cell in LADDER_CELLS] for r in g],
                  [LEGEND_SIGNIFICANCE, LEGEND_TIMING])
            for (model, hardware, dataset), g in _grouped(rows, ("model", "hardware", "dataset")).items()]


def pareto(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """The fronts, per hardware and dataset, point by point along each axis."""
    columns, rows = _rows(con, "SELECT * FROM pareto {where} ORDER BY hw_class, hw_chip, host_group, dataset, axis, x, "
                               "wer", sweep)
    tables = []
    for (hardware, dataset), group in _grouped(rows, ("hardware", "dataset")).items():
        human = [[r["axis"], r["model"], r["quantization"], pct(r["wer"]), megabytes(r["model_size_bytes"]),
                  number(r["rtf"])] for r in group]
        tables.append(Table(f"{dataset} on {hardware}: Pareto fronts", columns,
                            [tuple(r[c] for c in columns) for r in group],
                            ["front", "model", "quantization", "WER", "size", "RTF"], human))
    return tables


def support_cell(row: dict | None) -> str:
    if row is None:
        return ""
    state = row["state"]
    if state == "ok":
        return f"ok ({row['n_failed']} failed: {row['error_classes']})" if row["n_failed"] else "ok"
    if state == "unsupported":
        return f"unsupported ({row['reason']})"
    if state == "failed":
        return f"failed ({row['error_classes']})"
    return "no capacity"


def support(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """Library x scheme rows, one column per hardware class and chip, over every sweep (what a library can do)."""
    columns, rows = _rows(con, "SELECT * FROM support_matrix ORDER BY library, scheme, hw_class, hw_chip", None)
    chips = sorted({(r["hw_class"], r["hw_chip"]) for r in rows if r["hw_class"]}, key=_hardware_order)
    names = hardware_names({(hw_class, chip, None) for hw_class, chip in chips})
    cells = {(r["library"], r["scheme"], r["hw_class"], r["hw_chip"]): r for r in rows}
    pairs = sorted({(r["library"], r["scheme"]) for r in rows})
    human = [[library, scheme] + [support_cell(cells.get((library, scheme, *hw))) for hw in chips]
             for library, scheme in pairs]
    return [Table("support matrix", columns, [tuple(r[c] for c in columns) for r in rows],
                  ["library", "scheme"] + [names[(*hw, None)] for hw in chips], human)]


def hardware(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    """Every machine results came from, over every sweep."""
    columns, rows = _rows(con, "SELECT * FROM hardware ORDER BY hw_class, hw_chip, host_group, host", None)
    return [Table("hardware", columns, [tuple(r[c] for c in columns) for r in rows], list(columns),
                  [["-" if missing(v) else str(v) for v in (r[c] for c in columns)] for r in rows])]

