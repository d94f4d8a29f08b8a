"""CLI room for sweeps: `quantsweep` run, plan, status, query, schema, head/worker/cluster, workers (the app is
sweep/app.py; the results commands are sweep/results_cli.py, imported here so that `sweep.cli:app` has them all)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from results.queries import QueryError, connect as connect_results, query as run_query
from results.render import render
from results.store import Store
from sweep.app import DEFAULT_RESULTS, app, console
from sweep.plan import Plan, diff, expand
from sweep.spec import Spec, SpecError, json_schema, load_spec



def _spec_or_exit(path: Path) -> Spec:
    notes: list[str] = []
    try:
        spec = load_spec(path, notes)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    for note in notes:
        print(f"warning: {path}: {note}", file=sys.stderr)
    return spec


def _store(results: Optional[str], spec: Spec | None = None) -> Store:
    return Store(results or (spec.results if spec and spec.results else DEFAULT_RESULTS))


def _plan_or_exit(spec: Spec, source: Path, local_class: str, present: list[str] | None = None) -> Plan:
    try:
        return expand(spec, local_class, present, source)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


def _sources_or_exit(spec: Spec) -> None:
    """Hub models and datasets that cannot be reached stop the run before it writes anything."""
    from workers.datasets import DatasetError, check_reachable as check_dataset
    from workers.models.families import ModelUnavailable, check_reachable as check_model

    try:
        for model in spec.models:
            check_model(model)
        for dataset in [*spec.datasets, *spec.calibration]:
            check_dataset(dataset)
    except (DatasetError, ModelUnavailable) as exc:
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
    from sweep.baselines import Baselines, recorded
    from sweep.progress import SweepProgress
    from workers.hardware import probe

    spec = _spec_or_exit(spec_path)
    hardware = probe()
    _plan_or_exit(spec, spec_path, hardware.hw_class)  # every spec error before anything starts or is written
    _sources_or_exit(spec)
    store = _store(results, spec)
    store.write_prices(spec.sweep, spec.prices, spec.currency)  # issue 15: the prices the tables apply
    where, dashboard = scheduler.connect(address, hardware)
    present = sorted({n.hw_class for n in scheduler.live_nodes()})
    plan = _plan_or_exit(spec, spec_path, hardware.hw_class, present)
    # a race's stopped trials are decided (a grid run completes them); its racing ones go on
    stopped_done = ("stopped",) if spec.strategy == "adaptive" else ()
    from workers.trial import PACKAGE_MISSING

    todo = diff(plan.trials, store.finished(spec.sweep), rerun, retry_failed, stopped_done,
                store.unsupported_for(spec.sweep, PACKAGE_MISSING))
    console.print(f"sweep [bold]{spec.sweep}[/bold] ({spec.strategy}): {len(plan.trials)} trials planned, "
                  f"{len(todo.done)} already done, {len(todo.to_run)} to run, {len(plan.unsupported)} unsupported; "
                  f"Ray {where}; "
                  f"results in {store.root}" + (f"; Ray dashboard http://{dashboard}" if dashboard else ""))
    state = {"planned": len(plan.trials) + len(plan.unsupported), "to_run": len(todo.to_run), "ray": where,
             "host": socket.gethostname(), "pid": os.getpid(), "started_at": datetime.now(timezone.utc).isoformat()}
    store.write_run_state(spec.sweep, state | {"state": "running"})
    try:
        with SweepProgress(console, todo.to_run) as progress:
            scheduler.record_unsupported(plan.unsupported, store, store.finished(spec.sweep), progress.update)
            if spec.strategy == "adaptive":
                from sweep.racing import run_race

                summary = run_race(plan.trials, {t.trial_id for t in todo.to_run}, store, progress.update,
                                   spec.adaptive, retries, wait_timeout, rerun)
            else:
                baselines = Baselines(plan.trials, todo.to_run, set() if rerun else recorded(store, spec.sweep))
                summary = scheduler.run_trials(todo.to_run, store, progress.update, retries, wait_timeout, baselines)
    except BaseException as exc:
        # The run note says how the run ended; what was written stays, and running the spec again resumes.
        ended = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"crashed: {type(exc).__name__}: {exc}"[:2000]
        store.write_run_state(spec.sweep, state | {"state": ended, "finished_at": datetime.now(timezone.utc).isoformat()})
        raise
    store.write_run_state(spec.sweep, state | {"state": "finished", "finished_at": datetime.now(timezone.utc).isoformat(),
                                               "statuses": dict(summary.statuses)})
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing run"
    added = (f", {summary.baselines_added} fp32 baseline(s) added for chips that had none"
             if summary.baselines_added else "")
    console.print(f"done: {counts} in {summary.wall_s:.1f} s (trial compute {summary.compute_s:.1f} s, "
                  f"models loaded {summary.model_loads}x{added})")
    print(results_cli.leaderboard_text(store, "table", spec.sweep))


@app.command()
def plan(
    spec_path: Path = typer.Argument(..., metavar="SPEC"),
    results: Optional[str] = typer.Option(None, "--results"),
    address: Optional[str] = typer.Option(None, "--address", help="check which targeted classes have live nodes"),
    fmt: str = typer.Option("table", "--format", help="table|csv|json"),
) -> None:
    """List the trials a run would execute, and which are already done, without running anything."""
    from workers.hardware import probe

    spec = _spec_or_exit(spec_path)
    local = probe().hw_class
    present = None
    if address:
        from sweep import scheduler

        scheduler.connect(address)
        present = sorted({n.hw_class for n in scheduler.live_nodes()})
    the_plan = _plan_or_exit(spec, spec_path, local, present)
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
    if the_plan.unplaced:
        where = "in the cluster" if address else f"here ({local}; pass --address to check a cluster)"
        console.print(f"no live node {where} for: {', '.join(the_plan.unplaced)}; a run waits --wait-timeout "
                      "seconds for them, then records those trials no_capacity")


@app.command()
def query(
    sql: str = typer.Argument(..., help="one SELECT over the views trials, utterances, baselines, leaderboard"),
    results: str = typer.Option(DEFAULT_RESULTS, "--results"),
    fmt: str = typer.Option("table", "--format", help="table|csv|json"),
) -> None:
    """Run read-only SQL over the results."""
    _check_format(fmt, ("table", "csv", "json"))
    try:
        columns, rows = run_query(Store(results), sql)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(render(columns, rows, fmt))


@app.command()
def status(
    results: str = typer.Option(DEFAULT_RESULTS, "--results"),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="only this sweep"),
) -> None:
    """Summarise running and finished sweeps: trials per hardware class and status, and what is left."""
    store = Store(results)
    states = store.run_states()
    con = connect_results(store)
    rows = con.execute("SELECT sweep, hw_class, status, count(*) FROM trials GROUP BY ALL ORDER BY ALL").fetchall()
    sweeps = sorted({r[0] for r in rows} | set(states))
    for name in sweeps if sweep is None else [sweep]:
        state = states.get(name, {})
        recorded = {(r[1], r[2]): r[3] for r in rows if r[0] == name}
        done = sum(recorded.values())
        phase = state.get("state", "finished")
        if phase == "running" and not _pid_alive(state):
            phase = "interrupted (its driver is gone: run the spec again to resume)"
        left = max(state.get("planned", done) - done, 0)
        print(f"{name}: {done} recorded, {left} left of {state.get('planned', done)} planned; {phase}"
              f" (started {state.get('started_at', '?')} on {state.get('host', '?')})")
        for (hw_class, st), n in sorted(recorded.items()):
            print(f"  {hw_class:10} {st:12} {n}")


def _pid_alive(state: dict) -> bool:
    if state.get("host") != socket.gethostname():
        return True  # another machine's driver: trust its note
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return False
    return True


@app.command()
def schema() -> None:
    """Print the sweep spec's JSON Schema (for editor completion)."""
    print(json.dumps(json_schema(), indent=2))


head_app = typer.Typer(help="The Ray head node.")
worker_app = typer.Typer(help="Ray worker nodes labelled with their hardware.")
cluster_app = typer.Typer(help="A several-node Ray cluster on this machine, for trying things out and tests.")
app.add_typer(head_app, name="head")
app.add_typer(worker_app, name="worker")
app.add_typer(cluster_app, name="cluster")


def _start_node(address: Optional[str], labels: list[str], port: int, bind: str, trials: bool,
                simulate: Optional[str], cores: Optional[str], host_group: Optional[str],
                chip: Optional[str] = None) -> None:
    from sweep.cluster import device_tokens, node_environment, parse_labels, ray_start_args
    from workers.hardware import probe

    from sweep.scheduler import check_ray_version
    from workers.hardware import HOST_GROUP_LABEL, SIMULATED_CHIP_LABEL

    try:
        check_ray_version()
        hardware = probe(simulate, chip)
        extra = (parse_labels(labels) | ({HOST_GROUP_LABEL: host_group} if host_group else {})
                 | ({SIMULATED_CHIP_LABEL: chip} if chip else {}))
        args = ray_start_args(hardware, address, extra, device_tokens(hardware) if trials else 0, port=port, bind=bind,
                              cores=cores)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    tokens = device_tokens(hardware) if trials else 0
    console.print(f"{hardware.hw_class} node ({hardware.chip}), {tokens} device token(s), labels "
                  f"{hardware.labels(cores) | extra}")
    raise typer.Exit(subprocess.run(args, env=node_environment(cores)).returncode)


@head_app.command("start")
def head_start(
    port: int = typer.Option(6379, "--port"),
    bind: str = typer.Option("127.0.0.1", "--bind", help="address to listen on; 127.0.0.1 keeps the cluster private"),
    trials: bool = typer.Option(True, "--trials/--no-trials", help="also run trials on this machine"),
    label: list[str] = typer.Option([], "--label", help="extra node label key=value (repeatable)"),
    cores: Optional[str] = typer.Option(None, "--cores", help="pin trials to these cores, e.g. 0-7"),
    host_group: Optional[str] = typer.Option(None, "--host-group",
                                             help="machines interchangeable for timing share a name; baselines come from the same group"),
) -> None:
    """Start a Ray head node labelled with this machine's hardware (token authentication on)."""
    _start_node(None, label, port, bind, trials, None, cores, host_group)


@worker_app.command("start")
def worker_start(
    address: str = typer.Option(..., "--address", help="the head's host:port"),
    label: list[str] = typer.Option([], "--label", help="extra node label key=value (repeatable)"),
    simulate: Optional[str] = typer.Option(None, "--simulate", help="label this node as another class (tests)"),
    cores: Optional[str] = typer.Option(None, "--cores", help="pin trials to these cores, e.g. 0-7"),
    bind: str = typer.Option("", "--bind", help="this node's address as the head sees it (default: Ray's choice)"),
    host_group: Optional[str] = typer.Option(None, "--host-group",
                                             help="machines interchangeable for timing share a name; baselines come from the same group"),
    chip: Optional[str] = typer.Option(None, "--chip", help="with --simulate: the chip this simulated node stands "
                                                            "for (two chips of one class on one machine, tests)"),
) -> None:
    """Join a cluster as a worker labelled with this machine's hardware and one token per device."""
    _start_node(address, label, 0, bind, True, simulate, cores, host_group, chip)


@app.command()
def workers(address: Optional[str] = typer.Option(None, "--address")) -> None:
    """List the live nodes with their hardware labels and free device tokens."""
    from sweep import scheduler

    scheduler.connect(address or "auto")
    rows = [(n.node_id[:12], n.hw_class, n.chip, n.simulated, n.tokens, n.free_tokens) for n in scheduler.live_nodes()]
    print(render(("node", "hw_class", "hw_chip", "simulated", "tokens", "free_tokens"), rows, "table"))


@cluster_app.command("local")
def cluster_local(
    nodes: str = typer.Option("x86-cpu", "--nodes", help="comma-separated classes, one node each: cuda,apple,x86-cpu; "
                                                         "CLASS:CHIP simulates a named chip of the class"),
    cpus: int = typer.Option(1, "--cpus", help="CPUs each node offers"),
) -> None:
    """Start a head plus one labelled node per class on this machine (absent hardware is simulated on the CPU)."""
    from sweep.cluster import parse_nodes, start_local

    try:
        classes = parse_nodes(nodes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        cluster = start_local(classes, cpus)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    named = [f"{c}:{chip}" if chip else c for c, chip in classes]
    console.print(f"{len(classes)} node(s) up ({', '.join(named)}); logs in {cluster.logs}")
    print(cluster.address)
    console.print(f"run a sweep on it: quantsweep run SPEC --address {cluster.address}")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop what `cluster local` started, and nothing else."""
    from sweep.cluster import stop_local

    stopped = stop_local()
    console.print(f"stopped {', '.join(stopped)}" if stopped else "no local cluster was up")


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        print(f"error: --format {fmt!r}: choose one of {', '.join(allowed)}", file=sys.stderr)
        raise typer.Exit(2)


# Last, so that `quantsweep --help` lists the sweep commands first; it imports sweep.app only, not this module.
from sweep import results_cli  # noqa: E402

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
