"""Report room: one self-contained HTML file (sortable tables, interactive Pareto plots, support matrix,
hardware) and PNG plots beside it; works offline: inline CSS and JS, plots drawn by the page's own code."""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from results.queries import fetch
from results.tables import Table, cross_hardware, hardware, ladder, per_device, seed003, seed_table, support

POINT_COLUMNS = ("hw_class", "hw_chip", "host_group", "hardware", "dataset", "model", "quantization", "wer",
                 "wer_ci_low", "wer_ci_high", "model_size_bytes", "rtf", "cost_per_audio_hour", "currency",
                 "core_hours_per_audio_hour", "on_pareto_size", "on_pareto_rtf", "is_baseline", "significant",
                 "sweep", "trial_id")


@dataclass(frozen=True)
class Written:
    html: Path
    pngs: list[Path]
    rows: int


def _table_json(table: Table, keys: list[str] | None = None) -> dict[str, Any]:
    return {"title": table.title, "columns": table.human_columns, "rows": table.human_rows,
            "notes": table.notes, "keys": keys or []}


def _points(con: duckdb.DuckDBPyConnection, sweep: str | None) -> list[dict[str, Any]]:
    where = "WHERE sweep = ?" if sweep else ""
    columns, rows = fetch(con, f"SELECT {', '.join(POINT_COLUMNS)} FROM leaderboard {where} "
                               "ORDER BY hw_class, hw_chip, host_group, dataset, model, quantization", [sweep] if sweep else [])
    return [dict(zip(columns, r)) for r in rows]


def report_data(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data."""
    devices = per_device(con, sweep)
    def keys(table: Table) -> list[str]:  # sweep/trial_id: a trial id repeats across sweeps of the same config
        sweep_at, trial_at = table.columns.index("sweep"), table.columns.index("trial_id")
        return [f"{r[sweep_at]}/{r[trial_at]}" for r in table.rows]

    return {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sections": [
            {"id": "per-device", "title": "Leaderboards per device",
             "tables": [_table_json(t, keys(t)) for t in devices]},
            {"id": "cross-hardware", "title": "Across hardware",
             "tables": [_table_json(t) for t in cross_hardware(con, sweep)]},
            {"id": "seed-table", "title": "Seed study layout (Table 1)",
             "tables": [_table_json(t) for t in seed_table(con, sweep)]},
            {"id": "seed003", "title": "PTQ methods by bits, drift and analytic costs (seed 003)",
             "tables": [_table_json(t) for t in seed003(con, sweep)]},
            {"id": "ladder", "title": "RTF ladders", "tables": [_table_json(t) for t in ladder(con, sweep)]},
            {"id": "support", "title": "Support matrix", "tables": [_table_json(t) for t in support(con, sweep)]},
            {"id": "hardware", "title": "Hardware", "tables": [_table_json(t) for t in hardware(con, sweep)]},
        ],
        "points": _points(con, sweep),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def write_pngs(points: list[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per hardware (class, chip, host group) and dataset: WER against size and against RTF, fronts drawn
    as steps."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    written = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["hardware"], p["dataset"]), []).append(p)
    for (hardware, dataset), group in groups.items():
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for axis, (key, flag, label, scale) in zip(axes, (("model_size_bytes", "on_pareto_size", "size (MB)", 1e6),
                                                          ("rtf", "on_pareto_rtf", "RTF", 1.0))):
            shown = [p for p in group if p[key] is not None and p["wer"] is not None]
            for p in shown:
                x, y = p[key] / scale, p["wer"] * 100
                low = y - (p["wer_ci_low"] * 100 if p["wer_ci_low"] is not None else y)
                high = (p["wer_ci_high"] * 100 if p["wer_ci_high"] is not None else y) - y
                axis.errorbar(x, y, yerr=[[low], [high]], fmt="o", color="#c0392b" if p[flag] else "#7f8c8d",
                              ms=5, capsize=2, lw=0.8)
            front = sorted((p for p in shown if p[flag]), key=lambda p: p[key])
            if front:
                axis.step([p[key] / scale for p in front], [p["wer"] * 100 for p in front], where="post",
                          color="#c0392b", lw=1)
                for p in front:
                    axis.annotate(p["quantization"], (p[key] / scale, p["wer"] * 100), fontsize=7,
                                  xytext=(4, 4), textcoords="offset points")
            axis.set_xlabel(label)
            axis.set_ylabel("WER (%), 95% CI")
            axis.grid(alpha=0.3)
        figure.suptitle(f"{dataset} on {hardware}: Pareto fronts (red)")
        figure.tight_layout()
        path = out.with_name(f"{out.stem}-{_slug(hardware)}-{_slug(dataset)}.png")
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def render_html(data: dict[str, Any]) -> str:
    # "</" would end the script element early; JSON allows the escaped slash.
    payload = json.dumps(data, default=str, allow_nan=False).replace("</", "<\\/")
    return (PAGE.replace("__TITLE__", html.escape(f"quantsweep report, {data['generated']}"))
                .replace("__DATA__", payload))


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: a missing number is null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_report(con: duckdb.DuckDBPyConnection, out: Path, sweep: str | None = None) -> Written:
    data = _json_safe(report_data(con, sweep))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(render_html(data), encoding="utf-8")
    temporary.replace(out)
    rows = sum(len(t["rows"]) for t in data["sections"][0]["tables"])
    return Written(out, write_pngs(data["points"], out), rows)


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script>
// Installed first, so that an error anywhere on the page is counted in the DOM (tests read it).
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
(function () {
  var original = console.error;
  console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
})();
</script>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin: 1.2em 0 .3em; }
table { border-collapse: collapse; margin: .3em 0 .5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; cursor: pointer; user-select: none; }
th.sorted-asc::after { content: " \25B2"; } th.sorted-desc::after { content: " \25BC"; }
td:nth-child(-n+3) { text-align: left; }
tr.highlight td { background: #fff3c4; }
.notes { color: #666; font-size: .9em; margin: 0 0 1em; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plot { border: 1px solid #ddd; padding: .3em; }
.plot text { font-size: 11px; }
circle.point { cursor: pointer; }
#tooltip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 3px 6px;
  border-radius: 3px; font-size: 12px; display: none; }
nav a { margin-right: 1em; }
</style></head>
<body>
<h1>quantsweep report</h1>
<p id="meta"></p>
<nav id="nav"></nav>
<section id="plots"><h2>Pareto fronts</h2><p class="notes">WER (with its 95% bootstrap interval) against
model size and against RTF, per hardware (class, chip, host group) and dataset; red points are on the front. Hover a point for
its numbers, click it to find its row.</p><div class="plots" id="plot-area"></div></section>
<div id="sections"></div>
<div id="tooltip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
var DATA = JSON.parse(document.getElementById("data").textContent);
var SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
  if (text !== undefined) node.textContent = text;
  return node;
}
function svgEl(tag, attrs) {
  var node = document.createElementNS(SVG, tag);
  Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
  return node;
}
// Sort key of a cell: its leading number ("8.33% [..]", "151.1 MB", "+0.20% ~"), else its text.
function sortKey(text) {
  var n = parseFloat(String(text).replace(/^[^0-9+\-.]*/, ""));
  return isNaN(n) ? null : n;
}
function sortBy(table, column, th) {
  var body = table.tBodies[0];
  var descending = th.classList.contains("sorted-asc");
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.classList.remove("sorted-asc", "sorted-desc"); });
  th.classList.add(descending ? "sorted-desc" : "sorted-asc");
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = a.cells[column].textContent, y = b.cells[column].textContent;
    var nx = sortKey(x), ny = sortKey(y), order;
    if (nx !== null && ny !== null) order = nx - ny;
    else if (nx !== null) order = -1;
    else if (ny !== null) order = 1;
    else order = x.localeCompare(y);
    return descending ? -order : order;
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
function renderTable(spec, parent) {
  parent.appendChild(el("h3", {}, spec.title));
  var table = el("table", {"class": "sortable"});
  var head = table.createTHead().insertRow();
  spec.columns.forEach(function (name, i) {
    var th = el("th", {title: "click to sort"}, name);
    th.addEventListener("click", function () { sortBy(table, i, th); });
    head.appendChild(th);
  });
  var body = table.createTBody();
  spec.rows.forEach(function (cells, i) {
    var tr = body.insertRow();
    if (spec.keys[i]) { tr.setAttribute("data-trial", spec.keys[i]); tr.id = "row-" + spec.keys[i]; }
    cells.forEach(function (cell) { tr.appendChild(el("td", {}, cell)); });
  });
  parent.appendChild(table);
  if (spec.notes.length) parent.appendChild(el("p", {"class": "notes"}, spec.notes.join(" \u00b7 ")));
}
function format(p) {
  var ci = p.wer_ci_low === null ? "" : " [" + (100 * p.wer_ci_low).toFixed(2) + "\u2013" + (100 * p.wer_ci_high).toFixed(2) + "]";
  return p.model + " " + p.quantization + ": WER " + (100 * p.wer).toFixed(2) + "%" + ci +
    ", " + (p.model_size_bytes / 1e6).toFixed(1) + " MB, RTF " + (p.rtf === null ? "-" : p.rtf.toFixed(3));
}
function showRow(p) {
  var row = document.getElementById("row-" + p.sweep + "/" + p.trial_id);
  if (!row) return;
  document.querySelectorAll("tr.highlight").forEach(function (r) { r.classList.remove("highlight"); });
  row.classList.add("highlight");
  row.scrollIntoView({block: "center"});
}
var drawn = 0;
function plot(points, key, flag, label, scale, title) {
  var W = 420, H = 300, L = 52, R = 12, T = 24, B = 40;
  var shown = points.filter(function (p) { return p[key] !== null && p.wer !== null; });
  var svg = svgEl("svg", {width: W, height: H, "class": "plot", "data-axis": key});
  var title_ = svgEl("text", {x: L, y: 15}); title_.textContent = title; svg.appendChild(title_);
  if (!shown.length) return svg;
  var xs = shown.map(function (p) { return p[key] / scale; });
  var ys = shown.map(function (p) { return 100 * (p.wer_ci_high === null ? p.wer : Math.max(p.wer, p.wer_ci_high)); });
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y1 = Math.max.apply(null, ys.concat([0.01]));
  var pad = (x1 - x0) * 0.08 || Math.abs(x0) * 0.1 || 1;
  x0 -= pad; x1 += pad; y1 *= 1.1;
  function sx(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
  function sy(v) { return H - B - v / y1 * (H - T - B); }
  svg.appendChild(svgEl("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}));
  svg.appendChild(svgEl("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  for (var i = 0; i <= 4; i++) {
    var xv = x0 + (x1 - x0) * i / 4, yv = y1 * i / 4;
    var tx = svgEl("text", {x: sx(xv), y: H - B + 14, "text-anchor": "middle"}); tx.textContent = xv.toPrecision(3); svg.appendChild(tx);
    var ty = svgEl("text", {x: L - 4, y: sy(yv) + 4, "text-anchor": "end"}); ty.textContent = yv.toFixed(1); svg.appendChild(ty);
  }
  var xl = svgEl("text", {x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle"}); xl.textContent = label; svg.appendChild(xl);
  var yl = svgEl("text", {x: 12, y: (T + H - B) / 2, transform: "rotate(-90 12 " + (T + H - B) / 2 + ")", "text-anchor": "middle"});
  yl.textContent = "WER (%)"; svg.appendChild(yl);
  var front = shown.filter(function (p) { return p[flag]; }).sort(function (a, b) { return a[key] - b[key]; });
  if (front.length) {
    var d = "";
    front.forEach(function (p, i) {
      var x = sx(p[key] / scale), y = sy(100 * p.wer);
      d += i === 0 ? "M" + x + " " + y : " H" + x + " V" + y;
    });
    svg.appendChild(svgEl("path", {d: d, fill: "none", stroke: "#c0392b", "stroke-width": 1}));
  }
  var tooltip = document.getElementById("tooltip");
  shown.forEach(function (p) {
    var x = sx(p[key] / scale), y = sy(100 * p.wer);
    if (p.wer_ci_low !== null) {
      svg.appendChild(svgEl("line", {x1: x, x2: x, y1: sy(100 * p.wer_ci_low), y2: sy(100 * p.wer_ci_high),
                                     stroke: p[flag] ? "#c0392b" : "#aaa"}));
    }
    var c = svgEl("circle", {cx: x, cy: y, r: 4, "class": "point", "data-trial": p.sweep + "/" + p.trial_id,
                             fill: p[flag] ? "#c0392b" : "#7f8c8d"});
    c.addEventListener("mouseenter", function (e) {
      tooltip.textContent = format(p); tooltip.style.display = "block";
      tooltip.style.left = (e.clientX + 12) + "px"; tooltip.style.top = (e.clientY + 12) + "px";
    });
    c.addEventListener("mouseleave", function () { tooltip.style.display = "none"; });
    c.addEventListener("click", function () { showRow(p); });
    svg.appendChild(c);
    drawn++;
  });
  return svg;
}
function main() {
  document.getElementById("meta").textContent = "Generated " + DATA.generated + ". " + DATA.points.length +
    " scored runs. Intervals: 95% bootstrap over utterances; ΔWER p-values: paired bootstrap against the fp32 baseline.";
  var nav = document.getElementById("nav");
  nav.appendChild(el("a", {href: "#plots"}, "Pareto fronts"));
  var sections = document.getElementById("sections"), rendered = 0, expected = 0;
  DATA.sections.forEach(function (section) {
    nav.appendChild(el("a", {href: "#" + section.id}, section.title));
    var box = el("section", {id: section.id});
    box.appendChild(el("h2", {}, section.title));
    if (!section.tables.length) box.appendChild(el("p", {"class": "notes"}, "no rows"));
    section.tables.forEach(function (t) { expected += t.rows.length; renderTable(t, box); });
    sections.appendChild(box);
  });
  document.querySelectorAll("#sections tbody tr").forEach(function () { rendered++; });
  var groups = {}, order = [];
  DATA.points.forEach(function (p) {
    var k = p.hardware + " \u00b7 " + p.dataset;
    if (!groups[k]) { groups[k] = []; order.push(k); }
    groups[k].push(p);
  });
  var area = document.getElementById("plot-area");
  order.forEach(function (k) {
    area.appendChild(plot(groups[k], "model_size_bytes", "on_pareto_size", "size (MB)", 1e6, k + ": WER vs size"));
    area.appendChild(plot(groups[k], "rtf", "on_pareto_rtf", "RTF", 1, k + ": WER vs RTF"));
  });
  var expectedPoints = 0;
  DATA.points.forEach(function (p) {
    if (p.wer !== null && p.model_size_bytes !== null) expectedPoints++;
    if (p.wer !== null && p.rtf !== null) expectedPoints++;
  });
  var body = document.body;
  body.setAttribute("data-rows-expected", expected);
  body.setAttribute("data-rows-rendered", rendered);
  body.setAttribute("data-points-expected", expectedPoints);
  body.setAttribute("data-points-drawn", drawn);
}
try { main(); } catch (e) { window.__errors.push(String(e && e.stack || e)); }
document.body.setAttribute("data-errors", window.__errors.length);
if (window.__errors.length) document.body.appendChild(el("pre", {id: "errors"}, window.__errors.join("\n")));
</script>
</body></html>
"""
