"""Scheduler room: start or join Ray, route trials to hardware-labelled workers, retry, write, report."""
from __future__ import annotations

import collections
import fnmatch
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from results.store import Store
from workers.hardware import CLASS_LABEL, CHIP_LABEL, Hardware, probe
from workers.trial import Trial, TrialOutcome, WorkerCache, now, run_trial

log = logging.getLogger(__name__)

# One unit per physical device (a GPU, an Apple SoC, a CPU node's cores): a runner holds it for its whole
# life, so two timed trials never share a device.
DEVICE_TOKEN = "quantsweep_device"
IN_FLIGHT_PER_RUNNER = 2  # the next trial is queued while one runs: no idle round trip between trials
NODE_FAILURES = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)


def connect(address: str | None = None, hardware: Hardware | None = None) -> str:
    """Join `address`, or start Ray in-process (the embedded default) as one node labelled with this machine."""
    if ray.is_initialized():
        return "already connected"
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address:
        ray.init(address=address, **quiet)
        return address
    hardware = hardware or probe()
    ray.init(num_cpus=hardware.cores, resources={DEVICE_TOKEN: 1}, labels=hardware.labels(),
             include_dashboard=False, **quiet)
    return "embedded"


@dataclass(frozen=True)
class Node:
    node_id: str
    hw_class: str
    chip: str
    tokens: int


def live_nodes() -> list[Node]:
    nodes = []
    for n in ray.nodes():
        labels = n.get("Labels", {}) or {}
        tokens = int(n.get("Resources", {}).get(DEVICE_TOKEN, 0))
        if n.get("Alive") and tokens and CLASS_LABEL in labels:
            nodes.append(Node(n["NodeID"], labels[CLASS_LABEL], labels.get(CHIP_LABEL, ""), tokens))
    return nodes


def nodes_for(target: str, nodes: list[Node]) -> list[Node]:
    if target.startswith("chip:"):
        pattern = target.removeprefix("chip:").lower()
        return [n for n in nodes if fnmatch.fnmatch(n.chip.lower(), f"*{pattern}*")]
    return [n for n in nodes if n.hw_class == target]


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class TrialRunner:
    """Lives on one node and holds one device token: runs that device's trials one at a time, caches models."""

    def __init__(self) -> None:
        labels = ray.get_runtime_context().get_node_labels()
        real = probe()
        labelled = labels.get(CLASS_LABEL, real.hw_class)
        self.hardware = probe(simulate=labelled) if labelled != real.hw_class else real
        self.node_id = ray.get_runtime_context().get_node_id()
        self.cache = WorkerCache()

    def run(self, trial: Trial, attempt: int) -> TrialOutcome:
        outcome = run_trial(trial, self.hardware, self.cache, exclusive=True)
        outcome.row.update(node_id=self.node_id, attempt=attempt)
        return outcome

    def model_loads(self) -> int:
        return self.cache.model_loads


@dataclass
class Runner:
    handle: Any
    target: str
    models: set[str] = field(default_factory=set)
    in_flight: int = 0


@dataclass
class Summary:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    model_loads: int = 0
    compute_s: float = 0.0
    wall_s: float = 0.0


OnOutcome = Callable[[Trial, dict[str, Any]], None]


def run_trials(trials: list[Trial], store: Store, on_outcome: OnOutcome, retries: int = 2,
               wait_timeout_s: float = 0.0) -> Summary:
    """Run every trial on a runner of its target; each finished trial is written before the next is counted."""
    started = time.perf_counter()
    summary = Summary()
    queues: dict[str, collections.deque[Trial]] = collections.defaultdict(collections.deque)
    for trial in trials:
        queues[trial.hardware].append(trial)
    runners: list[Runner] = []
    for target in list(queues):
        placed = _start_runners(target, wait_timeout_s)
        if not placed:
            for trial in queues.pop(target):
                _record(store, trial, {"status": "no_capacity",
                                       "error": f"no live node of {target} within {wait_timeout_s:.0f} s"},
                        summary, on_outcome)
        runners += placed
    attempts: dict[str, int] = collections.Counter()
    pending: dict[Any, tuple[Runner, Trial]] = {}

    def feed(runner: Runner) -> None:
        while runner.in_flight < IN_FLIGHT_PER_RUNNER and queues.get(runner.target):
            trial = _next_for(runner, queues[runner.target])
            attempts[trial.trial_id] += 1
            pending[runner.handle.run.remote(trial, attempts[trial.trial_id])] = (runner, trial)
            runner.in_flight += 1
            runner.models.add(trial.model.name)

    for runner in runners:
        feed(runner)
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        runner, trial = pending.pop(ref)
        runner.in_flight -= 1
        try:
            outcome: TrialOutcome = ray.get(ref)
        except NODE_FAILURES as exc:
            _lost(runner, trial, exc, runners, queues, attempts, retries, store, summary, on_outcome)
        else:
            summary.compute_s += outcome.row.get("compute_s") or 0.0
            store.write_trial(trial.sweep, trial.trial_id, outcome.row, outcome.utterances)
            summary.statuses[outcome.status] += 1
            on_outcome(trial, outcome.row)
        for r in runners:
            feed(r)
    alive = [r for r in runners if r.handle is not None]
    summary.model_loads = sum(ray.get([r.handle.model_loads.remote() for r in alive])) if alive else 0
    for r in alive:
        ray.kill(r.handle)
    summary.wall_s = time.perf_counter() - started
    return summary


def _start_runners(target: str, wait_timeout_s: float) -> list[Runner]:
    deadline = time.monotonic() + wait_timeout_s
    while True:
        nodes = nodes_for(target, live_nodes())
        if nodes or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    runners = []
    for node in nodes:
        for _ in range(node.tokens):
            # The class label selects the node kind; node affinity pins the runner to the node whose token it takes.
            options: dict[str, Any] = {"resources": {DEVICE_TOKEN: 1},
                                       "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False)}
            if not target.startswith("chip:"):
                options["label_selector"] = {CLASS_LABEL: target}
            runners.append(Runner(TrialRunner.options(**options).remote(), target))
    return runners


def _next_for(runner: Runner, queue: collections.deque[Trial]) -> Trial:
    """Prefer a trial of a model this runner already holds (no reload); queues are grouped by model."""
    for i, trial in enumerate(queue):
        if trial.model.name in runner.models:
            del queue[i]
            return trial
        if i >= 64:  # a bounded look-ahead keeps the pick O(1) for huge sweeps
            break
    return queue.popleft()


def _lost(runner: Runner, trial: Trial, exc: Exception, runners: list[Runner], queues: dict, attempts: dict,
          retries: int, store: Store, summary: Summary, on_outcome: OnOutcome) -> None:
    """The runner's process or node died mid-trial: retry on another runner of the class, or record why not."""
    log.warning("trial %s lost its worker (%s)", trial.trial_id, type(exc).__name__)
    if runner.handle is not None:
        runner.handle = None
        queues_for_dead = runner.target
        replacement = _replace(runner, runners)
        if replacement is None and not any(r.handle is not None and r.target == queues_for_dead for r in runners):
            log.warning("no runner left for %s", queues_for_dead)
    if attempts[trial.trial_id] <= retries and any(r.handle is not None and r.target == trial.hardware for r in runners):
        queues[trial.hardware].appendleft(trial)
        return
    _record(store, trial, {"status": "failed", "error_type": type(exc).__name__,
                           "error": f"worker died {attempts[trial.trial_id]} time(s) running this trial: {exc}"[:4000],
                           "attempt": attempts[trial.trial_id]}, summary, on_outcome)


def _replace(dead: Runner, runners: list[Runner]) -> Runner | None:
    """Start a runner on a surviving node of the same target if one has a free token; dead runners stay None."""
    dead.in_flight = 0
    free = _free_tokens(dead.target)
    if not free:
        return None
    replacement = _start_on(free[0], dead.target)
    runners.append(replacement)
    return replacement


def _free_tokens(target: str) -> list[Node]:
    available = ray.available_resources()
    if available.get(DEVICE_TOKEN, 0) < 1:
        return []
    return [n for n in nodes_for(target, live_nodes())]


def _start_on(node: Node, target: str) -> Runner:
    options: dict[str, Any] = {"resources": {DEVICE_TOKEN: 1},
                               "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=True)}
    if not target.startswith("chip:"):
        options["label_selector"] = {CLASS_LABEL: target}
    return Runner(TrialRunner.options(**options).remote(), target)


def _record(store: Store, trial: Trial, fields: dict[str, Any], summary: Summary, on_outcome: OnOutcome) -> None:
    """A trial that never produced an outcome of its own still becomes exactly one row."""
    import uuid

    row = trial.describe() | {"run_id": uuid.uuid4().hex, "started_at": now(), "finished_at": now()} | fields
    store.write_trial(trial.sweep, trial.trial_id, row, [])
    summary.statuses[row["status"]] += 1
    on_outcome(trial, row)


def dashboard_url() -> str | None:
    url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), "dashboard_url") else None
    return url or os.environ.get("RAY_DASHBOARD_URL")


def record_unsupported(unsupported: list[tuple[Trial, str]], store: Store, finished: dict[str, str],
                       on_outcome: OnOutcome) -> None:
    """Combinations the support matrix rules out become rows with the reason, once."""
    summary = Summary()
    for trial, reason in unsupported:
        if finished.get(trial.trial_id) != "unsupported":
            _record(store, trial, {"status": "unsupported", "error": reason}, summary, on_outcome)
