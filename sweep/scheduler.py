"""Scheduler room: start or join Ray, route trials to hardware-labelled workers, retry, write, report."""
from __future__ import annotations

import collections
import fnmatch
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Token authentication, as `quantsweep head/worker start` use; Ray reads the mode when it is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")
import ray  # noqa: E402
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from results.store import Store  # noqa: E402
from workers.hardware import CHIP_LABEL, CLASS_LABEL, DEVICE_TOKEN, SIMULATED_LABEL, Hardware, pin_cores, probe  # noqa: E402
from workers.trial import Trial, TrialOutcome, WorkerCache, now, run_trial  # noqa: E402

log = logging.getLogger(__name__)

IN_FLIGHT_PER_RUNNER = 2  # the next trial is queued while one runs: no idle round trip between trials
NODE_FAILURES = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)


def connect(address: str | None = None, hardware: Hardware | None = None) -> tuple[str, str | None]:
    """Join `address`, or start Ray in-process (the embedded default) as one node labelled with this machine.

    Returns where the driver is connected and the Ray dashboard's address when one is up.
    """
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address:
        context = ray.init(address=address, **quiet)
        return address, context.dashboard_url or None
    hardware = hardware or probe()
    context = ray.init(address="local", num_cpus=hardware.cores, resources={DEVICE_TOKEN: 1}, labels=hardware.labels(),
                       include_dashboard=False, **quiet)
    return "embedded", context.dashboard_url or None


@dataclass(frozen=True)
class Node:
    node_id: str
    hw_class: str
    chip: str
    simulated: bool
    host: str
    tokens: int
    free_tokens: int


def live_nodes() -> list[Node]:
    """Alive nodes that offer device tokens, with their hardware labels and how many tokens are free."""
    free = {node_id: resources.get(DEVICE_TOKEN, 0)
            for node_id, resources in ray._private.state.available_resources_per_node().items()}
    nodes = []
    for n in ray.nodes():
        labels = n.get("Labels", {}) or {}
        tokens = int(n.get("Resources", {}).get(DEVICE_TOKEN, 0))
        if n.get("Alive") and tokens and CLASS_LABEL in labels:
            nodes.append(Node(n["NodeID"], labels[CLASS_LABEL], labels.get(CHIP_LABEL, ""),
                              labels.get(SIMULATED_LABEL) == "true", n.get("NodeManagerHostname", ""), tokens,
                              int(free.get(n["NodeID"], 0))))
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
        pin_cores()
        labels = ray.get_runtime_context().get_node_labels()
        real = probe()
        labelled = labels.get(CLASS_LABEL, real.hw_class)
        labelled = labelled[0] if isinstance(labelled, list) else labelled
        self.hardware = probe(simulate=labelled) if labelled != real.hw_class else real
        self.node_id = ray.get_runtime_context().get_node_id()
        self.cache = WorkerCache()

    def run(self, trial: Trial, attempt: int, results: str | None) -> TrialOutcome:
        """Run and, given a results root this node can write, write the rows here and return only the trial row.

        Writing where the trial ran keeps the driver's cost per trial small and lets workers on other
        machines write to shared storage; the trial row still travels back for progress and the summary.
        """
        outcome = run_trial(trial, self.hardware, self.cache, exclusive=True)
        outcome.row.update(node_id=self.node_id, attempt=attempt)
        if results is not None:
            Store(results).write_trial(trial.sweep, trial.trial_id, outcome.row, outcome.utterances)
            outcome.utterances, outcome.written = [], True
        return outcome

    def model_loads(self) -> int:
        return self.cache.model_loads


@dataclass
class Runner:
    handle: Any
    target: str
    node_id: str
    writes: bool  # the runner writes its own rows: the results root is a URI or on the runner's host
    models: set[str] = field(default_factory=set)
    in_flight: int = 0
    alive: bool = True


@dataclass
class Summary:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    model_loads: int = 0
    compute_s: float = 0.0
    wall_s: float = 0.0


OnOutcome = Callable[[Trial, dict[str, Any]], None]


class Dispatcher:
    """Feeds each target's queue to its runners, writes every outcome, retries trials whose worker died."""

    def __init__(self, store: Store, on_outcome: OnOutcome, retries: int):
        self.store, self.on_outcome, self.retries = store, on_outcome, retries
        self.summary = Summary()
        self.queues: dict[str, collections.deque[Trial]] = collections.defaultdict(collections.deque)
        self.runners: list[Runner] = []
        self.attempts: collections.Counter[str] = collections.Counter()
        self.pending: dict[Any, tuple[Runner, Trial]] = {}

    def run(self, trials: list[Trial], wait_timeout_s: float) -> Summary:
        started = time.perf_counter()
        for trial in trials:
            self.queues[trial.hardware].append(trial)
        for target in list(self.queues):
            if not self._top_up(target, wait_timeout_s):
                self._give_up(target, "no_capacity", f"no live node of {target} within {wait_timeout_s:.0f} s")
        for runner in self.runners:
            self._feed(runner)
        while self.pending:
            [ref], _ = ray.wait(list(self.pending), num_returns=1)
            runner, trial = self.pending.pop(ref)
            runner.in_flight -= 1
            try:
                outcome: TrialOutcome = ray.get(ref)
            except NODE_FAILURES as exc:
                self._lost(runner, trial, exc)
            else:
                self.summary.compute_s += outcome.row.get("compute_s") or 0.0
                self._write(trial, outcome.row, outcome.utterances, written=outcome.written)
            self._feed(runner)
        self._close()
        self.summary.wall_s = time.perf_counter() - started
        return self.summary

    def _feed(self, runner: Runner) -> None:
        queue = self.queues.get(runner.target)
        while runner.alive and runner.in_flight < IN_FLIGHT_PER_RUNNER and queue:
            trial = _next_for(runner, queue)
            self.attempts[trial.trial_id] += 1
            results = self.store.root if runner.writes else None
            self.pending[runner.handle.run.remote(trial, self.attempts[trial.trial_id], results)] = (runner, trial)
            runner.in_flight += 1
            runner.models.add(trial.model.name)

    def _top_up(self, target: str, wait_timeout_s: float = 0.0) -> bool:
        """Start a runner for every free device token of the target's live nodes; True if any runner lives."""
        deadline = time.monotonic() + wait_timeout_s
        while not (nodes := nodes_for(target, live_nodes())) and time.monotonic() < deadline:
            time.sleep(1.0)
        for node in nodes:
            taken = sum(1 for r in self.runners if r.alive and r.node_id == node.node_id)
            for _ in range(node.tokens - taken):
                self.runners.append(_start_runner(node, target, self._runner_writes(node)))
        return any(r.alive and r.target == target for r in self.runners)

    def _runner_writes(self, node: Node) -> bool:
        return "://" in self.store.root or node.host == socket.gethostname()

    def _lost(self, runner: Runner, trial: Trial, exc: Exception) -> None:
        """The runner's process or node died mid-trial: retry the trial on a live runner of its target."""
        log.warning("trial %s lost its worker on node %s (%s)", trial.trial_id, runner.node_id[:8], type(exc).__name__)
        if runner.alive:
            runner.alive = False
            for ref, (other, queued) in list(self.pending.items()):
                if other is runner:  # its queued trial dies with it; it was not the cause, so no attempt is charged
                    del self.pending[ref]
                    self.attempts[queued.trial_id] -= 1
                    self.queues[queued.hardware].appendleft(queued)
            ray.kill(runner.handle)
        has_runner = self._top_up(trial.hardware)
        if self.attempts[trial.trial_id] <= self.retries and has_runner:
            self.queues[trial.hardware].appendleft(trial)
        else:
            self._record(trial, {"status": "failed", "error_type": type(exc).__name__, "attempt": self.attempts[trial.trial_id],
                                 "error": f"its worker died {self.attempts[trial.trial_id]} time(s) running it: {exc}"[:4000]})
        for r in self.runners:
            self._feed(r)
        if not has_runner:
            self._give_up(trial.hardware, "no_capacity", f"every node of {trial.hardware} died")

    def _give_up(self, target: str, status: str, why: str) -> None:
        for trial in self.queues.pop(target, ()):
            self._record(trial, {"status": status, "error": why})

    def _record(self, trial: Trial, fields: dict[str, Any]) -> None:
        """A trial that produced no outcome of its own still becomes exactly one row."""
        row = trial.describe() | {"run_id": uuid.uuid4().hex, "started_at": now(), "finished_at": now()} | fields
        self._write(trial, row, [])

    def _write(self, trial: Trial, row: dict[str, Any], utterances: list[dict[str, Any]], written: bool = False) -> None:
        if not written:
            self.store.write_trial(trial.sweep, trial.trial_id, row, utterances)
        self.summary.statuses[row["status"]] += 1
        self.on_outcome(trial, row)

    def _close(self) -> None:
        alive = [r for r in self.runners if r.alive]
        self.summary.model_loads = sum(ray.get([r.handle.model_loads.remote() for r in alive])) if alive else 0
        for r in alive:
            ray.kill(r.handle)


def run_trials(trials: list[Trial], store: Store, on_outcome: OnOutcome, retries: int = 2,
               wait_timeout_s: float = 0.0) -> Summary:
    """Run every trial on a runner of its target; each outcome is written as it arrives."""
    return Dispatcher(store, on_outcome, retries).run(trials, wait_timeout_s)


def _start_runner(node: Node, target: str, writes: bool) -> Runner:
    # Node affinity pins the runner to the node whose token it takes; for class targets the label selector
    # states the routing rule itself, so a mislabelled placement cannot happen silently.
    options: dict[str, Any] = {"resources": {DEVICE_TOKEN: 1},
                               "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False)}
    if not target.startswith("chip:"):
        options["label_selector"] = {CLASS_LABEL: target}
    return Runner(TrialRunner.options(**options).remote(), target, node.node_id, writes)


def _next_for(runner: Runner, queue: collections.deque[Trial]) -> Trial:
    """Prefer a trial of a model this runner already holds (no reload); queues are grouped by model."""
    for i, trial in enumerate(queue):
        if trial.model.name in runner.models:
            del queue[i]
            return trial
        if i >= 64:  # a bounded look-ahead keeps the pick cheap for huge sweeps
            break
    return queue.popleft()


def record_unsupported(unsupported: list[tuple[Trial, str]], store: Store, finished: dict[str, str],
                       on_outcome: OnOutcome) -> None:
    """Combinations the support matrix rules out become rows with the reason, once."""
    dispatcher = Dispatcher(store, on_outcome, retries=0)
    for trial, reason in unsupported:
        if finished.get(trial.trial_id) != "unsupported":
            dispatcher._record(trial, {"status": "unsupported", "error": reason})
