"""Baselines room: every chip and host group that runs trials of a model and dataset gets its own fp32 run.

A trial targeted at a class runs on whichever node of the class takes it, and its ΔWER, speed-up and p compare
it with the fp32 run of its model, dataset and eval settings on the same chip, host group and simulation state
(results/sql/baselines.sql). So when trials of a model, dataset and eval settings whose fp32 run the sweep plans
have gone to a placement where no such run exists, neither in this run nor among the sweep's results, the
scheduler runs one there too, after that placement's share of the queue: a trial pinned to it (sweep/plan.py
`baseline_for`), whose id holds the placement so that a resumed run finds it. A sweep that plans no fp32 run
gets none added.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from results.store import Store
from sweep.plan import baseline_for, is_baseline
from workers.hardware import Placement
from workers.trial import Trial

# model, dataset, eval settings (canonical JSON), placement: what baselines.sql matches a trial's baseline on
Key = tuple[str, str, str, Placement]
ROW_COLUMNS = ["status", "library", "scheme", "model", "dataset", "eval_config", "hw_class", "hw_chip", "host_group",
               "host", "hw_simulated"]


def setup(trial: Trial) -> tuple[str, str, str]:
    """What a baseline must share with a trial besides where it ran: model, dataset and eval settings."""
    return trial.model.name, trial.dataset.name, trial.describe()["eval_config"]



def recorded(store: Store, sweep: str) -> set[Key]:
    """The placements where the sweep's results already hold an ok fp32 run, per model, dataset and eval settings."""
    rows = store.read("trials", sweep, columns=ROW_COLUMNS).to_pylist()
    return {(r["model"], r["dataset"], r["eval_config"],
             Placement(r["hw_class"], r["hw_chip"], r["host_group"] or r["host"], bool(r["hw_simulated"])))
            for r in rows if r["status"] == "ok" and r["library"] == "none" and r["scheme"] == "fp32"
            and r["hw_chip"] is not None}


class Baselines:
    """Which placements have the fp32 run of each setup (recorded, running or done in this run), and the fp32 runs
    to add, pinned to the placements that lack one.

    A placement's run is added only once the sweep's own fp32 run of the setup has gone to a runner (or was done
    before): on one machine that run covers it, and nothing runs twice or out of the spec's order.
    """

    def __init__(self, planned: list[Trial] | None = None, to_run: list[Trial] | None = None,
                 known: set[Key] | None = None):
        # the setups whose fp32 run the sweep plans: only those get one on every placement
        self.wanted = {setup(t) for t in planned or () if is_baseline(t)}
        # planned fp32 runs of each setup not yet given to a runner
        self.queued = Counter(setup(t) for t in to_run or () if is_baseline(t))
        # key -> the trial of this run that is or was its baseline; None: recorded before this run
        self.covered: dict[Key, str | None] = dict.fromkeys(known or ())
        self.ran: dict[tuple[str, str, str], set[Placement]] = defaultdict(set)  # where each setup's trials went
        self.asked: set[Key] = set()  # fp32 runs added in this run: each at most once
        self.added = 0

    def placed(self, trial: Trial, placement: Placement) -> list[Trial]:
        """A trial went to a runner on `placement`; the fp32 runs to add now, each pinned to its placement."""
        trial_setup = setup(trial)
        if is_baseline(trial):
            self.covered.setdefault((*trial_setup, placement), trial.trial_id)
            if trial.placement is None and self.queued[trial_setup]:
                self.queued[trial_setup] -= 1
            lacking = self.ran[trial_setup]
        else:
            self.ran[trial_setup].add(placement)
            lacking = {placement}
        if trial_setup not in self.wanted or self.queued[trial_setup]:
            return []
        added = []
        for where in lacking:
            wanted = (*trial_setup, where)
            if wanted not in self.covered and wanted not in self.asked:
                self.asked.add(wanted)
                added.append(baseline_for(trial, where))
        self.added += len(added)
        return added

    def ended(self, trial: Trial, ok: bool) -> None:
        """A trial finished or failed: a baseline that did not end ok covers nothing."""
        if not ok:
            for lost in [k for k, trial_id in self.covered.items() if trial_id == trial.trial_id]:
                del self.covered[lost]

    def requeued(self, trial: Trial) -> None:
        """A trial went back to its queue (its worker died): it covers nothing until it is placed again."""
        self.ended(trial, ok=False)
        if is_baseline(trial) and trial.placement is None:
            self.queued[setup(trial)] += 1
