"""Scheduler room: start or join Ray, route trials to hardware-labelled workers, retry, write, report."""
from __future__ import annotations

import collections
import fnmatch
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

# Token authentication, as `quantsweep head/worker start` use; Ray reads the mode when it is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")
import ray  # noqa: E402
from ray.exceptions import (ActorDiedError, ActorUnavailableError, LocalRayletDiedError, NodeDiedError,  # noqa: E402
                            ObjectLostError, RayActorError, RaySystemError, WorkerCrashedError)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from results.store import Store  # noqa: E402
from sweep.baselines import Baselines  # noqa: E402
from workers.hardware import (CHIP_LABEL, CLASS_LABEL, CORES_ENV, CORES_LABEL, DEVICE_TOKEN, HOST_GROUP_LABEL,  # noqa: E402
                              SIMULATED_LABEL, Hardware, Placement, node_hardware, parse_cores, pin_cores, probe)
from workers.trial import Trial, TrialOutcome, WorkerCache, error_text, now, run_trial  # noqa: E402

log = logging.getLogger(__name__)

IN_FLIGHT_PER_RUNNER = 2  # the next trial is queued while one runs: no idle round trip between trials
# What a worker's, an actor's or a node's death looks like to the driver: the trial is retried elsewhere.
NODE_FAILURES = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError, NodeDiedError,
                 LocalRayletDiedError, RaySystemError, ObjectLostError)
# While runners are being placed, how often the driver checks that their nodes are still alive.
PLACEMENT_CHECK_S = 5.0


# The first Ray with token authentication (RAY_AUTH_MODE=token), which every node of a cluster runs with.
RAY_FLOOR = (2, 52, 0)
# How long the driver trusts its picture of which nodes share a host's cores before asking Ray again.
LAYOUT_TTL_S = 10.0


def check_ray_version(version: str = ray.__version__) -> None:
    found = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    if found < RAY_FLOOR:
        raise RuntimeError(f"Ray {version} has no token authentication; quantsweep needs Ray >= "
                           f"{'.'.join(map(str, RAY_FLOOR))} (pip install -U 'ray>={'.'.join(map(str, RAY_FLOOR))}')")


def connect(address: str | None = None, hardware: Hardware | None = None) -> tuple[str, str | None]:
    """Join `address`, or start Ray in-process (the embedded default) as one node labelled with this machine.

    Returns where the driver is connected and the Ray dashboard's address when one is up.
    """
    from sweep.cluster import WORKER_PRIORITY_ENV, device_tokens

    check_ray_version()
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address:
        context = ray.init(address=address, **quiet)
        return address, context.dashboard_url or None
    hardware = hardware or probe()
    for key, value in WORKER_PRIORITY_ENV.items():  # read by the raylet ray.init starts
        os.environ.setdefault(key, value)
    context = ray.init(address="local", num_cpus=hardware.cores, resources={DEVICE_TOKEN: device_tokens(hardware)},
                       labels=hardware.labels(os.environ.get(CORES_ENV)), include_dashboard=False, **quiet)
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
    cores: frozenset[int] | None = None  # pinned cores (`--cores`); None: all of the host's cores
    host_group: str = ""  # `--host-group` label: machines interchangeable for timing ("" : the host alone)

    @property
    def real_gpus(self) -> bool:
        return self.hw_class == "cuda" and not self.simulated


def live_nodes() -> list[Node]:
    """Alive nodes that offer device tokens, with their hardware labels and how many tokens are free."""
    free = {node_id: resources.get(DEVICE_TOKEN, 0)
            for node_id, resources in ray._private.state.available_resources_per_node().items()}
    nodes = []
    for n in ray.nodes():
        labels = n.get("Labels", {}) or {}
        tokens = int(n.get("Resources", {}).get(DEVICE_TOKEN, 0))
        if n.get("Alive") and tokens and CLASS_LABEL in labels:
            cores = labels.get(CORES_LABEL)
            nodes.append(Node(n["NodeID"], labels[CLASS_LABEL], labels.get(CHIP_LABEL, ""),
                              labels.get(SIMULATED_LABEL) == "true", n.get("NodeManagerHostname", ""), tokens,
                              int(free.get(n["NodeID"], 0)), frozenset(parse_cores(cores)) if cores else None,
                              labels.get(HOST_GROUP_LABEL, "")))
    return nodes


def nodes_for(target: str, nodes: list[Node]) -> list[Node]:
    if target.startswith("chip:"):
        pattern = target.removeprefix("chip:").lower()
        return [n for n in nodes if fnmatch.fnmatch(n.chip.lower(), f"*{pattern}*")]
    return [n for n in nodes if n.hw_class == target]


def cores_exclusive(node: Node, nodes: list[Node]) -> bool:
    """No other timed trial can run on this CPU node's cores: one token, and no node on its host shares a core.

    Unpinned nodes use every core of the host, so two of them on one machine (`cluster local`) share.
    """
    if node.tokens != 1:
        return False
    for other in nodes:
        if other.node_id != node.node_id and other.host == node.host:
            if node.cores is None or other.cores is None or node.cores & other.cores:
                return False
    return True


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class TrialRunner:
    """Lives on one node and holds one device token: runs that device's trials one at a time, caches models."""

    def __init__(self) -> None:
        pin_cores()
        context = ray.get_runtime_context()
        labels = context.get_node_labels()
        hardware = node_hardware(labels)
        # Ray gives a CUDA runner one GPU of its own (num_gpus=1) and shows only it (CUDA_VISIBLE_DEVICES).
        gpus = ray.get_gpu_ids() if hardware.hw_class == "cuda" and not hardware.simulated else []
        self.own_gpu = len(gpus) == 1
        self.hardware = replace(hardware, host_group=labels.get(HOST_GROUP_LABEL, ""),
                                gpu=int(gpus[0]) if self.own_gpu else None)
        self.node_id = context.get_node_id()
        self.cache = WorkerCache()

    def ready(self) -> Placement:
        """Answers once the runner lives on its node, with the chip and host group its rows record: trials go
        only to runners that answered, and baselines are placed by that answer."""
        return self.hardware.placement

    def run(self, trial: Trial, attempt: int, results: str | None, cores_exclusive: bool,
            runners_on_node: int) -> TrialOutcome:
        """Run and, given a results root this node can write, write the rows here and return only the trial row.

        Writing where the trial ran keeps the driver's cost per trial small and lets workers on other
        machines write to shared storage; the trial row still travels back for progress and the summary.
        """
        if trial.placement not in (None, self.hardware.placement):
            raise RuntimeError(f"trial {trial.trial_id} is pinned to {trial.placement}, not {self.hardware.placement}")
        exclusive = self.own_gpu if self.hardware.gpu is not None else cores_exclusive
        outcome = run_trial(trial, self.hardware, self.cache, exclusive=exclusive, runners_on_node=runners_on_node)
        outcome.row.update(node_id=self.node_id, attempt=attempt)
        if results is not None:
            Store(results).write_trial(trial.sweep, trial.trial_id, outcome.row, outcome.utterances)
            outcome.utterances, outcome.written = [], True
        return outcome


class Interrupts:
    """Ctrl-C while trials run. Ray's blocking calls check for signals inside themselves and may consume the
    KeyboardInterrupt a SIGINT raises there, letting the sweep run on to the end: the handler also records the
    signal, and the dispatcher's loop raises it again after each wait."""

    def __init__(self) -> None:
        self.received = threading.Event()
        self.previous: Any = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():  # signal handlers belong to the main thread
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.set()
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.received.is_set():
            raise KeyboardInterrupt


@dataclass
class Runner:
    handle: Any
    target: str
    node: Node
    writes: bool  # the runner writes its own rows: the results root is a URI or on the runner's host
    models: set[str] = field(default_factory=set)
    in_flight: int = 0
    ready: bool = False  # it answered `ready`: it lives on its node
    placement: Placement | None = None  # the chip and host group it answered with
    alive: bool = True
    head_since: float = 0.0  # when the oldest trial it was given began running (monotonic seconds)

    @property
    def node_id(self) -> str:
        return self.node.node_id


@dataclass
class Summary:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    model_loads: int = 0
    baselines_added: int = 0  # fp32 runs added for chips and host groups that had none (sweep/baselines.py)
    compute_s: float = 0.0
    wall_s: float = 0.0


OnOutcome = Callable[[Trial, dict[str, Any]], None]


@dataclass(frozen=True)
class Started:
    """A pending `ready` call: the runner is being placed on its node."""

    runner: Runner


@dataclass(frozen=True)
class Running:
    """A pending `run` call: the runner is running (or has queued) this trial."""

    runner: Runner
    trial: Trial


class Dispatcher:
    """Feeds each target's queue to its runners, writes every outcome, retries trials whose worker died.

    Nothing a worker, an actor or a node does ends the driver: every Ray call it waits on is one of the
    pending calls, and any failure of one becomes a retry, a runner that is not used, or a `failed` row.
    """

    def __init__(self, store: Store, on_outcome: OnOutcome, retries: int, baselines: Baselines | None = None):
        self.store, self.on_outcome, self.retries = store, on_outcome, retries
        self.baselines = baselines or Baselines()
        self.summary = Summary()
        self.queues: dict[str, collections.deque[Trial]] = collections.defaultdict(collections.deque)
        # baselines pinned to a chip and host group, and the nodes whose runners answered with each placement
        self.pinned: dict[Placement, collections.deque[Trial]] = collections.defaultdict(collections.deque)
        self.placed_on: dict[Placement, set[str]] = collections.defaultdict(set)
        self.runners: list[Runner] = []
        self.attempts: collections.Counter[str] = collections.Counter()
        self.pending: dict[Any, Started | Running] = {}
        self.unusable: dict[str, str] = {}  # node id -> why no runner goes there again in this run
        self._layout: tuple[float, list[Node]] = (0.0, [])

    def run(self, trials: list[Trial], wait_timeout_s: float) -> Summary:
        started = time.perf_counter()
        for trial in trials:
            self.queues[trial.hardware].append(trial)
        for target in list(self.queues):
            waiting_since = now()  # a no_capacity row's started_at: when the wait for a node began
            if not self._top_up(target, wait_timeout_s):
                self._give_up(target, "no_capacity", f"no live node of {target} within {wait_timeout_s:.0f} s",
                              waiting_since)
        with Interrupts() as interrupts:
            while any(isinstance(p, Running) for p in self.pending.values()) or self._waiting_for_runners():
                done, _ = ray.wait(list(self.pending), num_returns=1, timeout=PLACEMENT_CHECK_S)
                interrupts.check()
                if done:
                    self._handle(done[0], self.pending.pop(done[0]))
                else:
                    self._drop_placements_on_dead_nodes()
                self._end_overdue()
        for placement in [p for p, q in self.pinned.items() if q]:  # every trial is one row, even one never placed
            self._give_up_pinned(placement, "no runner of its chip and host group was left")
        self._close()
        self.summary.baselines_added = self.baselines.added
        self.summary.wall_s = time.perf_counter() - started
        return self.summary

    def _waiting_for_runners(self) -> bool:
        """Trials are queued and a runner that could take them is still being placed."""
        return any(self.queues.get(p.runner.target) or self._pinned_on(p.runner.node_id)
                   for p in self.pending.values() if isinstance(p, Started))

    def _pinned_on(self, node_id: str) -> bool:
        """Pinned baselines wait for a placement this node's runners have answered with."""
        return any(q and node_id in self.placed_on[p] for p, q in self.pinned.items())

    def _handle(self, ref: Any, call: Started | Running) -> None:
        runner = call.runner
        try:
            value = ray.get(ref)
        except NODE_FAILURES as exc:
            if isinstance(call, Started):
                self._never_started(runner, exc)
            else:
                runner.in_flight -= 1
                self._lost(runner, call.trial, exc)
        except Exception as exc:  # noqa: BLE001 - the trial's handling failed: it is that trial's row
            if isinstance(call, Started):
                self._never_started(runner, exc)
            else:
                runner.in_flight -= 1
                runner.head_since = time.monotonic()
                self._record_failure(call.trial, exc, runner)
        else:
            if isinstance(call, Started):
                runner.ready, runner.placement = True, value
                self.placed_on[value].add(runner.node_id)
            else:
                runner.in_flight -= 1
                runner.head_since = time.monotonic()  # the trial queued behind this one starts now
                self._finished(call.trial, value, runner)
        for r in self.runners:
            self._feed(r)
        self._give_up_stranded()

    def _drop_placements_on_dead_nodes(self) -> None:
        """A runner placed on a node that died before it started may wait for ever: stop waiting for it."""
        alive = {n.node_id for n in self._nodes(fresh=True)}
        for ref, call in list(self.pending.items()):
            if isinstance(call, Started) and call.runner.node_id not in alive:
                del self.pending[ref]
                self._never_started(call.runner, NodeDiedError(f"node {call.runner.node_id} died before the runner started"))
        self._give_up_stranded()

    def _finished(self, trial: Trial, outcome: TrialOutcome, runner: Runner) -> None:
        self.baselines.ended(trial, outcome.status == "ok")
        try:
            self.summary.compute_s += outcome.row.get("compute_s") or 0.0
            self.summary.model_loads += outcome.row.get("model_reused") is False
            self._write(trial, outcome.row, outcome.utterances, written=outcome.written)
        except Exception as exc:  # noqa: BLE001 - e.g. the results directory refused the write
            self._record_failure(trial, exc, runner)

    def _record_failure(self, trial: Trial, exc: BaseException, runner: Runner) -> None:
        self.baselines.ended(trial, ok=False)
        log.warning("trial %s failed outside the trial itself: %s", trial.trial_id, exc)
        try:
            self._record(trial, _where(runner) | {
                "status": "failed", "error_type": type(exc).__name__, "attempt": self.attempts[trial.trial_id],
                "error": f"the trial's handling failed: {error_text(exc)}"[:4000]})
        except Exception as again:  # noqa: BLE001 - not even its row can be written: say so and go on
            log.error("trial %s: its failed row could not be written either: %s", trial.trial_id, again)
            self.summary.statuses["failed"] += 1

    def _feed(self, runner: Runner) -> None:
        while runner.alive and runner.ready and runner.in_flight < IN_FLIGHT_PER_RUNNER:
            trial = self._take(runner)
            if trial is None:
                return
            for baseline in self.baselines.placed(trial, runner.placement):
                self.pinned[baseline.placement].append(baseline)
            self.attempts[trial.trial_id] += 1
            results = self.store.root if runner.writes and self.worker_writes else None
            exclusive = cores_exclusive(runner.node, self._nodes())
            if not runner.in_flight:
                runner.head_since = time.monotonic()
            ref = runner.handle.run.remote(trial, self.attempts[trial.trial_id], results, exclusive, runner.node.tokens)
            self.pending[ref] = Running(runner, trial)
            runner.in_flight += 1
            runner.models.add(trial.model.name)

    # Whether runners write their trials' rows (a race's driver merges rungs and writes them itself).
    worker_writes = True

    def _take(self, runner: Runner) -> Trial | None:
        """The next trial of the runner's target; once those are all given out, the fp32 runs added for its
        placement (so they never break a worker's reuse of a model or a quantization)."""
        queue = self.queues.get(runner.target)
        if queue:
            return self._pick(runner, queue)
        pinned = self.pinned.get(runner.placement)
        return pinned.popleft() if pinned else None

    def _pick(self, runner: Runner, queue: collections.deque[Trial]) -> Trial | None:
        """The next trial for this runner (taken off the queue), or None to leave it idle for now."""
        return _next_for(runner, queue)

    def _requeue(self, trial: Trial) -> None:
        """Back to the front of its queue: its target's, or its placement's for a pinned baseline."""
        self.baselines.requeued(trial)
        (self.pinned[trial.placement] if trial.placement else self.queues[trial.hardware]).appendleft(trial)

    def _nodes(self, fresh: bool = False) -> list[Node]:
        """Live nodes, asked of Ray at most every LAYOUT_TTL_S (each ask is a round trip to the GCS)."""
        asked, nodes = self._layout
        if fresh or time.monotonic() - asked > LAYOUT_TTL_S:
            self._layout = (time.monotonic(), live_nodes())
        return self._layout[1]

    def _top_up(self, target: str, wait_timeout_s: float = 0.0) -> bool:
        """Start a runner for every free device token of the target's usable nodes; True if any runner lives."""
        deadline = time.monotonic() + wait_timeout_s
        while not (nodes := self._usable(target)) and time.monotonic() < deadline:
            time.sleep(1.0)
        for node in nodes:
            taken = sum(1 for r in self.runners if r.alive and r.node_id == node.node_id)
            for _ in range(node.tokens - taken):
                runner = _start_runner(node, target, self._runner_writes(node))
                self.runners.append(runner)
                self.pending[runner.handle.ready.remote()] = Started(runner)
        return any(r.alive and r.target == target for r in self.runners)

    def _usable(self, target: str) -> list[Node]:
        return [n for n in nodes_for(target, self._nodes(fresh=True)) if n.node_id not in self.unusable]

    def _runner_writes(self, node: Node) -> bool:
        return "://" in self.store.root or node.host == socket.gethostname()

    def _never_started(self, runner: Runner, exc: Exception) -> None:
        """A runner that died before it answered: its node is dead or cannot host one; none goes there again."""
        log.warning("runner on node %s never started (%s)", runner.node_id[:8], type(exc).__name__)
        runner.alive = False
        self.unusable[runner.node_id] = f"a runner there never started: {type(exc).__name__}: {exc}"[:500]
        _kill(runner)

    def _lost(self, runner: Runner, trial: Trial, exc: Exception) -> None:
        """The runner's process or node died mid-trial: retry the trial on a live runner of its target."""
        log.warning("trial %s lost its worker on node %s (%s)", trial.trial_id, runner.node_id[:8], type(exc).__name__)
        if runner.alive:
            self._retire(runner)
        # A replacement may go to the same node (a trial crashed its process) and is used once it answers;
        # if the node itself is gone it never answers, and that node is not used again.
        has_runner = self._top_up(trial.hardware)
        if self.attempts[trial.trial_id] <= self.retries and has_runner:
            self._requeue(trial)
        else:
            self.baselines.ended(trial, ok=False)
            self._record(trial, _where(runner) | {
                "status": "failed", "error_type": type(exc).__name__, "attempt": self.attempts[trial.trial_id],
                "error": f"its worker died {self.attempts[trial.trial_id]} time(s) running it: {exc}"[:4000]})

    def _retire(self, runner: Runner) -> None:
        """Kill a runner; the trials queued on it were not the cause: back to their queue, no attempt charged."""
        runner.alive = False
        for ref, call in list(self.pending.items()):
            if isinstance(call, Running) and call.runner is runner:
                del self.pending[ref]
                runner.in_flight -= 1
                self.attempts[call.trial.trial_id] -= 1
                self._requeue(call.trial)
        _kill(runner)

    def _end_overdue(self) -> None:
        """A trial running past its `eval.trial_timeout_s` is ended with its runner: a `failed` row, and a fresh
        runner takes the node's token (a hang repeats, so it is not retried)."""
        for runner in [r for r in self.runners if r.alive and r.in_flight]:
            ref, head = next((ref, c) for ref, c in self.pending.items() if isinstance(c, Running) and c.runner is runner)
            running_s = time.monotonic() - runner.head_since
            if running_s <= head.trial.eval.trial_timeout_s:
                continue
            log.warning("trial %s ran past its %.0f s limit on node %s", head.trial.trial_id,
                        head.trial.eval.trial_timeout_s, runner.node_id[:8])
            del self.pending[ref]
            runner.in_flight -= 1
            self._retire(runner)
            self._top_up(head.trial.hardware)
            self.baselines.ended(head.trial, ok=False)
            self._record(head.trial, _where(runner) | {"status": "failed", "error_type": "TrialTimeout",
                                      "attempt": self.attempts[head.trial.trial_id], "error": (
                                          f"the trial was still running after {running_s:.0f} s, past "
                                          f"eval.trial_timeout_s ({head.trial.eval.trial_timeout_s:g} s): its "
                                          "runner was killed")})
            self._give_up_stranded()

    def _give_up_stranded(self) -> None:
        """Queued trials whose target has no runner alive and none that can be started become no_capacity rows."""
        for target in [t for t, q in self.queues.items() if q]:
            if not any(r.alive and r.target == target for r in self.runners) and not self._top_up(target):
                why = "; ".join(sorted(set(self.unusable.values())))[:1000] or "no live node"
                self._give_up(target, "no_capacity", f"every node of {target} died or is unusable ({why})")
        for placement in [p for p, q in self.pinned.items() if q]:
            if not any(r.alive and r.node_id in self.placed_on[placement] for r in self.runners):
                self._give_up_pinned(placement, "every node of its chip and host group died or is unusable")

    def _give_up_pinned(self, placement: Placement, why: str) -> None:
        for trial in self.pinned.pop(placement, ()):
            self._record(trial, {"status": "no_capacity", "error": f"{why} ({placement.hw_chip}, host group "
                                                                   f"{placement.host_group})"})

    def _give_up(self, target: str, status: str, why: str, since: Any = None) -> None:
        for trial in self.queues.pop(target, ()):
            self._record(trial, {"status": status, "error": why} | ({"started_at": since} if since else {}))

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
        for r in self.runners:
            if r.alive:
                _kill(r)


def _where(runner: Runner) -> dict[str, Any]:
    """Where a trial the driver records was running: its runner's chip and host group, once the runner answered."""
    where = {"node_id": runner.node_id}
    if runner.placement is not None:
        where |= runner.placement.as_config()
    return where


def _kill(runner: Runner) -> None:
    runner.alive = False
    try:
        ray.kill(runner.handle)
    except Exception as exc:  # noqa: BLE001 - an actor already gone (its node died) needs no killing
        log.debug("kill of a runner on %s: %s", runner.node_id[:8], exc)


def run_trials(trials: list[Trial], store: Store, on_outcome: OnOutcome, retries: int = 2,
               wait_timeout_s: float = 0.0, baselines: Baselines | None = None) -> Summary:
    """Run every trial on a runner of its target, and the fp32 baselines its placements lack (`baselines`:
    those already recorded); each outcome is written as it arrives."""
    return Dispatcher(store, on_outcome, retries, baselines).run(trials, wait_timeout_s)


def runner_options(node: Node, target: str) -> dict[str, Any]:
    """How a runner is placed: one device token, on this node; a GPU of its own on a node with real GPUs.

    Node affinity pins the runner to the node whose token it takes; for class targets the label selector
    states the routing rule itself, so a mislabelled placement cannot happen silently.
    """
    options: dict[str, Any] = {"resources": {DEVICE_TOKEN: 1},
                               "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False)}
    if node.real_gpus:
        options["num_gpus"] = 1  # Ray assigns the GPU and sets CUDA_VISIBLE_DEVICES: one runner per GPU
    if not target.startswith("chip:"):
        options["label_selector"] = {CLASS_LABEL: target}
    return options


def _start_runner(node: Node, target: str, writes: bool) -> Runner:
    return Runner(TrialRunner.options(**runner_options(node, target)).remote(), target, node, writes)


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
