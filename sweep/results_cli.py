"""CLI room for results: `quantsweep leaderboard`, `compact`, `rescore`, `report` (registered on sweep/app.py's app)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import duckdb
import typer

from results.queries import QueryError, connect, scorings
from results.render import FORMATS, render_tables
from results.statcache import fill
from results.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from results.store import Store
from results.tables import PRESETS
from results.views import BUILDERS, VIEWS
from sweep.app import DEFAULT_RESULTS, app, console


command = app.command()


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _fail(f"{name} {value!r}: choose one of {', '.join(allowed)}")


def open_results(results: str, scoring: str = "latest", resamples: int = DEFAULT_RESAMPLES,
                 seed: int = DEFAULT_SEED) -> tuple[Store, duckdb.DuckDBPyConnection]:
    """The views over a results directory, with the bootstrap statistics of every run filled in."""
    store = Store(results)
    try:
        con = connect(store, scoring, resamples, seed)
    except QueryError as exc:
        raise _fail(str(exc)) from None
    known = scorings(con)
    if scoring not in ("latest", "original") and known and not any(
            scoring == version or version.split("@")[0] == scoring for version in known):
        raise _fail(f"--scoring {scoring!r}: this results directory has {', '.join(known)}")
    computed = fill(con, store)
    if computed:
        console.print(f"bootstrap statistics computed for {computed} runs ({resamples} resamples, seed {seed})")
    return store, con


def leaderboard_text(store: Store, fmt: str, sweep: str | None = None, view: str = "per-device",
                     scoring: str = "latest", resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> str:
    _, con = open_results(store.root, scoring, resamples, seed)
    return render_tables(BUILDERS[view](con, sweep), fmt, empty="no ok trials yet")


@command
def leaderboard(
    results: str = typer.Option(DEFAULT_RESULTS, "--results", help="results directory"),
    fmt: str = typer.Option("table", "--format", help="|".join(FORMATS)),
    view: str = typer.Option("per-device", "--view", help="|".join(VIEWS)),
    preset: Optional[str] = typer.Option(None, "--preset", help="|".join(PRESETS) + " (a layout; replaces --view)"),
    scoring: str = typer.Option("latest", "--scoring",
                                help="latest | original | a scoring version or normalizer name (see rescore)"),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="only this sweep (ranked views)"),
    resamples: int = typer.Option(DEFAULT_RESAMPLES, "--resamples", min=10, help="bootstrap resamples"),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="bootstrap seed"),
) -> None:
    """Rank trials per dataset and hardware class by WER, with CIs, ΔWER and its significance against fp32."""
    _choice("--format", fmt, FORMATS)
    _choice("--view", view, VIEWS)
    if preset is not None:
        _choice("--preset", preset, PRESETS)
    print(leaderboard_text(Store(results), fmt, sweep, preset or view, scoring, resamples, seed))


@command
def compact(results: str = typer.Option(DEFAULT_RESULTS, "--results", help="results directory")) -> None:
    """Merge the per-trial Parquet files into one part file per table and sweep (safe while a sweep writes)."""
    store = Store(results)
    try:
        done = store.compact()
    except ValueError as exc:
        raise _fail(str(exc)) from None
    console.print(f"compacted {done.merged_files} files ({done.rows} rows) into {done.part_files} part files"
                  + (f"; {len(done.kept_changed)} changed meanwhile and were kept" if done.kept_changed else ""))


@command
def rescore(
    normalizer: str = typer.Option(..., "--normalizer", help="whisper-english | basic | none"),
    results: str = typer.Option(DEFAULT_RESULTS, "--results", help="results directory"),
) -> None:
    """Score the stored raw hypotheses again under another normaliser, as a new scoring version."""
    from sweep.rescore import rescore as run_rescore
    from workers.scoring import NORMALIZERS

    _choice("--normalizer", normalizer, tuple(NORMALIZERS))
    done = run_rescore(Store(results), normalizer)
    if not done:
        console.print("nothing to rescore: no ok runs with hypotheses")
    for r in done:
        console.print(f"scoring {r.scoring}: {r.runs} runs, {r.utterances} utterances")


@command
def report(
    out: Path = typer.Option(..., "--out", help="the HTML file; PNG plots are written beside it"),
    results: str = typer.Option(DEFAULT_RESULTS, "--results", help="results directory"),
    scoring: str = typer.Option("latest", "--scoring", help="latest | original | a scoring version or normalizer"),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="only this sweep (ranked views)"),
) -> None:
    """One self-contained HTML report (sortable tables, Pareto plots, support matrix, hardware) and PNG plots."""
    from results.report import write_report

    _, con = open_results(results, scoring)
    written = write_report(con, out, sweep)
    console.print(f"wrote {out} and {len(written.pngs)} PNG plots ({written.rows} leaderboard rows)")
