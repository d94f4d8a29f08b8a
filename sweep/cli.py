"""CLI room: `quantsweep` run, plan, status, leaderboard, query, schema."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from results.queries import QueryError, query as run_query
from results.render import FORMATS, render
from results.store import Store
from sweep.plan import Plan, diff, expand
from sweep.spec import Spec, SpecError, json_schema, load_spec

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)
DEFAULT_RESULTS = "runs"


def _spec_or_exit(path: Path) -> Spec:
    try:
        return load_spec(path)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


def _store(results: Optional[str], spec: Spec | None = None) -> Store:
    return Store(results or (spec.results if spec and spec.results else DEFAULT_RESULTS))


def _plan_or_exit(spec: Spec, source: Path, local_class: str, present: list[str] | None = None) -> Plan:
    try:
        return expand(spec, local_class, present, source)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


@app.command()
def run(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="sweep YAML"),
    results: Optional[str] = typer.Option(None, "--results", help="results directory or pyarrow.fs URI"),
    address: Optional[str] = typer.Option(None, "--address", help="join this Ray cluster instead of starting one"),
    rerun: bool = typer.Option(False, "--rerun", help="run every trial again, finished or not"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run only trials whose last run failed"),
    retries: int = typer.Option(2, "--retries", min=0, help="re-runs of a trial whose worker died"),
    wait_timeout: float = typer.Option(0.0, "--wait-timeout", help="seconds to wait for a node of a targeted class"),
) -> None:
    """Run a sweep: every trial not yet `ok` in the results directory."""
    from sweep import scheduler
    from sweep.progress import SweepProgress
    from workers.hardware import probe

    spec = _spec_or_exit(spec_path)
    hardware = probe()
    _plan_or_exit(spec, spec_path, hardware.hw_class)  # every spec error before anything starts or is written
    store = _store(results, spec)
    where = scheduler.connect(address, hardware)
    present = sorted({n.hw_class for n in scheduler.live_nodes()})
    plan = _plan_or_exit(spec, spec_path, hardware.hw_class, present)
    todo = diff(plan.trials, store.finished(spec.sweep), rerun, retry_failed)
    console.print(f"sweep [bold]{spec.sweep}[/bold]: {len(plan.trials)} trials planned, {len(todo.done)} already "
                  f"done, {len(todo.to_run)} to run, {len(plan.unsupported)} unsupported; Ray {where}; "
                  f"results in {store.root}")
    with SweepProgress(console, todo.to_run) as progress:
        scheduler.record_unsupported(plan.unsupported, store, store.finished(spec.sweep), progress.update)
        summary = scheduler.run_trials(todo.to_run, store, progress.update, retries, wait_timeout)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing run"
    console.print(f"done: {counts} in {summary.wall_s:.1f} s (trial compute {summary.compute_s:.1f} s, "
                  f"models loaded {summary.model_loads}x)")
    print(leaderboard_text(store, "table", spec.sweep))


@app.command()
def plan(
    spec_path: Path = typer.Argument(..., metavar="SPEC"),
    results: Optional[str] = typer.Option(None, "--results"),
    fmt: str = typer.Option("table", "--format", help="table|csv|json"),
) -> None:
    """List the trials a run would execute, and which are already done, without running anything."""
    from workers.hardware import probe

    spec = _spec_or_exit(spec_path)
    local = probe().hw_class
    the_plan = _plan_or_exit(spec, spec_path, local)
    finished = _store(results, spec).finished(spec.sweep)
    rows = [(t.trial_id, t.model.name, t.quantization.label(), t.dataset.name, t.hardware,
             finished.get(t.trial_id, "pending")) for t in the_plan.trials]
    rows += [(t.trial_id, t.model.name, t.quantization.label(), t.dataset.name, t.hardware, f"unsupported: {why}")
             for t, why in the_plan.unsupported]
    print(render(("trial_id", "model", "quantization", "dataset", "hardware", "state"), rows, fmt))
    counts = the_plan.counts_by_class()
    console.print(f"{len(the_plan.trials)} runnable ({', '.join(f'{c}: {n}' for c, n in counts.items())}), "
                  f"{len(the_plan.unsupported)} unsupported, {the_plan.excluded} excluded, "
                  f"{sum(1 for t in the_plan.trials if finished.get(t.trial_id) == 'ok')} already ok")


def leaderboard_text(store: Store, fmt: str, sweep: str | None = None) -> str:
    return results_cli.leaderboard_text(store, fmt, sweep)


@app.command()
def query(
    sql: str = typer.Argument(..., help="one SELECT over the views trials, utterances, baselines, leaderboard"),
    results: str = typer.Option(DEFAULT_RESULTS, "--results"),
    fmt: str = typer.Option("table", "--format", help="table|csv|json"),
) -> None:
    """Run read-only SQL over the results."""
    _check_format(fmt, ("table", "csv", "json"))
    try:
        relation = run_query(Store(results), sql)
        columns, rows = relation.columns, relation.fetchall()
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(render(columns, rows, fmt))


@app.command()
def schema() -> None:
    """Print the sweep spec's JSON Schema (for editor completion)."""
    print(json.dumps(json_schema(), indent=2))


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        print(f"error: --format {fmt!r}: choose one of {', '.join(allowed)}", file=sys.stderr)
        raise typer.Exit(2)


from sweep import results_cli  # noqa: E402,F401  (registers result commands)

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
