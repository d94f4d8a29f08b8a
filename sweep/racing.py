"""Racing room: the driver of an adaptive sweep. Each (model family, dataset, hardware) group's trials run rung
after rung as Ray tasks on the same runners as grid trials; after each rung the race (results/race.py) stops
the trials another trial dominates with confidence, and the survivors go on until they end on every utterance.

Rows on disk are the race's state: after every rung the driver writes the trial's row (status `racing`, then
`ok` or `stopped`) with all its utterance rows so far (each with its `rung`), so a later run continues the race
where it was: it reads them back, replays the decisions (they are deterministic) and queues the next rungs.

Timing stays comparable: a group's rungs all run on nodes of one chip and host group (the first runner that
takes one of its rungs pins it), and each trial's rungs go back to the runner that keeps its quantized model.
"""
from __future__ import annotations

import bisect
import collections
import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from results.race import Contender, Rules, decide, dominating_pairs
from results.store import Store
from sweep.scheduler import Dispatcher, OnOutcome, Runner, Summary
from sweep.spec import Adaptive
from workers.rungs import Rung, race_order, rung_ends
from workers.trial import Trial, TrialOutcome

log = logging.getLogger(__name__)

# Trial columns that add up over rungs (seconds, counts, analytic costs of what ran).
SUMMED = ("features_s", "encode_s", "decode_s", "warmup_s", "timed_s", "eval_s", "compute_s", "memory_s", "drift_s",
          "costs_s", "encoder_windows", "decoded_tokens", "bops", "mem_io_bytes", "kl_tokens",
          "batch_changed_transcripts", "runtime_load_s", "runtime_mel_s", "runtime_sample_s", "runtime_encode_s",
          "runtime_decode_s", "runtime_batchd_s", "runtime_prompt_s")
# Over several rungs these have no single value (a repeat's spread, best-of-N per utterance): NULL.
NOT_MERGED = ("rtf_cv", "latency_best_s", "latency_cv")
ALIVE = ("waiting", "racing", "ok")


@dataclass
class Entry:
    """One trial in a race: what it scored so far and where it stands."""

    trial: Trial
    group: Group
    state: str = "waiting"  # waiting (no rung yet), racing, ok (every rung), stopped, failed
    row: dict[str, Any] | None = None  # the trial row over the rungs so far
    utterances: list[dict[str, Any]] = field(default_factory=list)
    rungs_done: int = 0
    running: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    stopped_at: int | None = None


@dataclass
class Group:
    name: str
    entries: list[Entry] = field(default_factory=list)
    looks_done: int = 0
    ends: list[int] | None = None  # utterances scored after each rung (known once the dataset's size is)
    pairs: int | None = None  # Bonferroni's count of ordered pairs, fixed at the first look
    pin: tuple[str, str] | None = None  # (chip, host group) where its rungs run


def group_name(trial: Trial) -> str:
    return f"{trial.model.family} / {trial.dataset.name} / {trial.hardware}"


def merge_rung(previous: dict[str, Any] | None, rung_row: dict[str, Any], utterances: list[dict[str, Any]],
               rung: int) -> dict[str, Any]:
    """The trial row over rungs 1..rung: accuracy recomputed from every utterance row, RTF as total compute seconds
    over total audio, seconds and counts summed, peak memory the largest; the latest rung says where it ran."""
    row = dict(rung_row)
    scored = [u for u in utterances if u.get("error") is None]
    ref_words, ref_chars = sum(u["ref_words"] for u in scored), sum(u["ref_chars"] for u in scored)
    word_errors = sum(u["substitutions"] + u["deletions"] + u["insertions"] for u in scored)
    row.update(n_utterances=len(utterances), n_utterance_errors=len(utterances) - len(scored),
               audio_seconds=sum(u["duration_s"] for u in scored), ref_words=ref_words, word_errors=word_errors,
               wer=word_errors / ref_words if ref_words else None,
               cer=sum(u["char_errors"] for u in scored) / ref_chars if ref_chars else None, race_rung=rung)
    if row.get("batch_size") == 1 and scored:
        seconds = [u["seconds"] for u in scored]
        row.update(latency_p50_s=float(np.percentile(seconds, 50)), latency_p90_s=float(np.percentile(seconds, 90)))
    if previous is None:
        row["race_setup_s"] = row["compute_s"] - (row.get("timed_s") or 0.0) - (row.get("drift_s") or 0.0)
        row["race_requantized"] = 0
    else:
        for name in SUMMED:
            if previous.get(name) is not None or row.get(name) is not None:
                row[name] = (previous.get(name) or 0) + (row.get(name) or 0)
        for name in ("rtf", "rtf_best"):
            if previous.get(name) is not None and rung_row.get(name) is not None:
                row[name] = (previous[name] * previous["audio_seconds"] + rung_row[name] * rung_row["audio_seconds"]
                             ) / row["audio_seconds"]
        row["rtfx"] = 1 / row["rtf"] if row.get("rtf") else None
        for name in ("kl_to_baseline", "top1_agreement"):  # token-weighted means
            if previous.get(name) is not None and rung_row.get(name) is not None and row.get("kl_tokens"):
                row[name] = (previous[name] * previous["kl_tokens"] + rung_row[name] * rung_row["kl_tokens"]
                             ) / row["kl_tokens"]
        if previous.get("peak_mem_bytes") is not None and rung_row.get("peak_mem_bytes") is not None:
            row["peak_mem_bytes"] = max(previous["peak_mem_bytes"], rung_row["peak_mem_bytes"])
        row.update({name: None for name in NOT_MERGED})
        row["timing_exclusive"] = bool(previous.get("timing_exclusive")) and bool(rung_row.get("timing_exclusive"))
        for name in ("started_at", "load_s", "model_reused", "race_setup_s"):
            row[name] = previous.get(name)
        row["quantize_s"] = (previous.get("quantize_s") or 0) + (0 if rung_row.get("quantized_reused")
                                                                  else rung_row.get("quantize_s") or 0)
        row["quantized_reused"] = previous.get("quantized_reused")
        row["race_requantized"] = (previous.get("race_requantized") or 0) + (not rung_row.get("quantized_reused"))
        row["log"] = "\n".join(filter(None, [previous.get("log"), rung_row.get("log") and
                                             f"[rung {rung}] {rung_row['log']}"]))
    scaled = (row.get("timed_s") or 0.0) + (row.get("drift_s") or 0.0)
    if row["audio_seconds"]:
        row["grid_estimate_s"] = row["race_setup_s"] + scaled * row["race_dataset_audio_s"] / row["audio_seconds"]
    return row


def paired(entries: list[Entry], rung: int) -> list[Contender]:
    """The contenders' numbers on the utterances every one of them scored in rungs 1..rung, in utt_id order."""
    per_entry = [{u["utt_id"]: u for u in e.utterances if u.get("rung") is not None and u["rung"] <= rung
                  and u.get("error") is None} for e in entries]
    common = sorted(set.intersection(*(set(m) for m in per_entry)))
    contenders = []
    for e, by_id in zip(entries, per_entry):
        rows = [by_id[utt_id] for utt_id in common]
        contenders.append(Contender(
            e.trial.trial_id, np.array([u["substitutions"] + u["deletions"] + u["insertions"] for u in rows], float),
            np.array([u["ref_words"] for u in rows], float), np.array([u["seconds"] for u in rows], float),
            e.row.get("model_size_bytes") if e.row else None))
    return contenders


class RaceDispatcher(Dispatcher):
    """The grid's dispatcher, fed rung by rung: outcomes are merged into races instead of written as they come."""

    worker_writes = False  # the driver merges each rung into the trial's row and writes it

    def __init__(self, store: Store, on_outcome: OnOutcome, retries: int, race: Adaptive):
        super().__init__(store, on_outcome, retries)
        self.race = race
        self.groups: dict[str, Group] = {}
        self.entries: dict[str, Entry] = {}
        self.holders: dict[str, Runner] = {}  # trial id -> the runner that keeps its quantized model

    # ---- setting up from the plan and the rows on disk --------------------------------------------------

    def add(self, trial: Trial) -> Entry:
        name = group_name(trial)
        group = self.groups.setdefault(name, Group(name))
        entry = Entry(trial, group)
        group.entries.append(entry)
        self.entries[trial.trial_id] = entry
        return entry

    def resume(self, entry: Entry, row: dict[str, Any], utterances: list[dict[str, Any]]) -> None:
        """Continue from a trial's latest row: a racing or stopped trial's rungs, or a complete trial (a finished
        race, or a grid run: its utterances get the rungs the race order gives them)."""
        population = row.get("race_dataset_utterances") or row.get("n_utterances") or 0
        ends = rung_ends(population, self.race.first_rung, self.race.growth)
        entry.group.ends = entry.group.ends or ends
        if row.get("race_rung") is None:  # a grid run's complete trial
            order = race_order([u["utt_id"] for u in utterances], self.race.seed)
            rank = {utt_id: i for i, utt_id in enumerate(order)}
            for u in utterances:
                u["rung"] = bisect.bisect_right(ends, rank[u["utt_id"]]) + 1
        entry.row, entry.utterances, entry.run_id = row, utterances, row["run_id"]
        entry.rungs_done = row.get("race_rung") or len(ends)
        entry.state = row["status"]
        if entry.state == "stopped":
            entry.stopped_at = entry.rungs_done

    def start(self, wait_timeout_s: float) -> Summary:
        for group in self.groups.values():
            self._advance(group)
        return self.run([], wait_timeout_s)

    # ---- the race --------------------------------------------------------------------------------------

    def _advance(self, group: Group) -> None:
        """Queue the rungs the group's live trials need next; decide each look once every live trial has it."""
        while True:
            alive = [e for e in group.entries if e.state in ALIVE]
            if not alive:
                return
            look = group.looks_done + 1
            behind = [e for e in alive if e.rungs_done < look]
            if behind:
                for e in behind:
                    if not e.running:
                        self._queue(e, e.rungs_done + 1)
                return
            if group.ends is None or look >= len(group.ends):
                return  # the survivors have run every rung
            self._look(group, look)
            group.looks_done = look

    def _queue(self, entry: Entry, rung: int) -> None:
        entry.running = True
        trial = replace(entry.trial, rung=Rung(rung, self.race.first_rung, self.race.growth, self.race.seed))
        self.queues[trial.hardware].append(trial)

    def _look(self, group: Group, rung: int) -> None:
        contenders = [e for e in group.entries
                      if e.state in ("racing", "ok") or (e.state == "stopped" and e.stopped_at >= rung)]
        if len(contenders) < 2:
            return
        if group.pairs is None:
            sizes = [e.row.get("model_size_bytes") for e in contenders]
            group.pairs = dominating_pairs(sizes, self.race.objectives)
        numbers = paired(contenders, rung)
        rules = Rules(tuple(self.race.objectives), self.race.confidence, self.race.rtf_margin,
                      looks=len(group.ends) - 1, population=group.ends[-1], pairs=group.pairs)
        for stop in decide(numbers, rules):
            entry = self.entries[stop.trial_id]
            if entry.state == "racing":
                self._stop(entry, rung, self.entries[stop.dominated_by], stop.reason, rules)

    def _stop(self, entry: Entry, rung: int, by: Entry, reason: str, rules: Rules) -> None:
        entry.state, entry.stopped_at = "stopped", rung
        scored = entry.group.ends[rung - 1]
        entry.row.update(status="stopped", race_dominated_by=by.trial.trial_id, race_reason=(
            f"dominated by {by.trial.quantization.label()} ({by.trial.trial_id}) after rung {rung} ({scored} of "
            f"{entry.group.ends[-1]} utterances) at {self.race.confidence:.0%} confidence "
            f"(Bonferroni over {rules.looks} looks x {rules.pairs} pairs): {reason}"))
        super()._write(entry.trial, entry.row, entry.utterances)

    def _race_columns(self, entry: Entry) -> dict[str, Any]:
        return {"race_group": entry.group.name, "race_objectives": ",".join(self.race.objectives),
                "race_confidence": self.race.confidence,
                "race_rungs": len(entry.group.ends) if entry.group.ends else None}

    # ---- the dispatcher's hooks ------------------------------------------------------------------------

    def _pick(self, runner: Runner, queue: collections.deque[Trial]) -> Trial | None:
        """A rung of a trial this runner keeps the model of, else one no live runner keeps, on a runner of the
        group's chip and host group; a group whose host group has no live runner left moves to this one's."""
        key = (runner.node.chip, runner.node.host_group or runner.node.host)
        live_keys = {(r.node.chip, r.node.host_group or r.node.host) for r in self.runners if r.alive}
        fallback = None
        for index, trial in enumerate(queue):
            group = self.entries[trial.trial_id].group
            if group.pin is not None and group.pin != key and group.pin in live_keys:
                continue
            holder = self.holders.get(trial.trial_id)
            if holder is runner:
                fallback = index
                break
            if fallback is None and (holder is None or not holder.alive):
                fallback = index
        if fallback is None:
            return None
        trial = queue[fallback]
        del queue[fallback]
        group = self.entries[trial.trial_id].group
        if group.pin is not None and group.pin != key:
            log.warning("race %s: no runner left on %s; its rungs go on on %s", group.name, group.pin, key)
        group.pin = key
        self.holders[trial.trial_id] = runner
        return trial

    def _finished(self, trial: Trial, outcome: TrialOutcome, runner: Runner) -> None:
        entry = self.entries[trial.trial_id]
        entry.running = False
        self.attempts[trial.trial_id] = 0  # retries are counted per rung
        self.summary.compute_s += outcome.row.get("compute_s") or 0.0
        self.summary.model_loads += outcome.row.get("model_reused") is False
        try:
            outcome.row.update(self._race_columns(entry), run_id=entry.run_id)
            if outcome.status != "ok":  # failed or unsupported: the trial leaves the race with that row
                entry.state = outcome.status
                super()._write(entry.trial, outcome.row | {"race_rung": trial.rung.index}, outcome.utterances)
            else:
                self._scored(entry, trial.rung.index, outcome)
        except Exception as exc:  # noqa: BLE001 - e.g. the results directory refused the write
            self._record_failure(trial, exc, runner)
            return
        self._advance(entry.group)

    def _scored(self, entry: Entry, rung: int, outcome: TrialOutcome) -> None:
        group = entry.group
        if group.ends is None:
            group.ends = rung_ends(outcome.row["race_dataset_utterances"], self.race.first_rung, self.race.growth)
            outcome.row["race_rungs"] = len(group.ends)
        for u in outcome.utterances:
            u.update(rung=rung, run_id=entry.run_id)
        entry.utterances = entry.utterances + outcome.utterances
        entry.row = merge_rung(entry.row, outcome.row, entry.utterances, rung)
        entry.rungs_done = rung
        complete = rung == len(group.ends)
        entry.state = entry.row["status"] = "ok" if complete else "racing"
        if complete:
            super()._write(entry.trial, entry.row, entry.utterances)
        else:
            self.store.write_trial(entry.trial.sweep, entry.trial.trial_id, entry.row, entry.utterances)

    def _write(self, trial: Trial, row: dict[str, Any], utterances: list[dict[str, Any]], written: bool = False) -> None:
        """A rung that produced no outcome of its own (its worker kept dying, no capacity, its handling failed):
        the trial leaves the race with that row."""
        entry = self.entries.get(trial.trial_id)
        if trial.rung is None or entry is None:
            super()._write(trial, row, utterances, written)
            return
        entry.running, entry.state = False, row["status"]
        super()._write(entry.trial, row | self._race_columns(entry) | {"race_rung": trial.rung.index}, [])
        self._advance(entry.group)


def latest_rows(store: Store, sweep: str, trial_ids: set[str]) -> dict[str, tuple[dict, list[dict]]]:
    """Each trial's latest row and that run's utterance rows, as written."""
    trials = store.read("trials", sweep)
    if trials.num_rows == 0:
        return {}
    trials = trials.filter(pc.is_in(trials["trial_id"], value_set=pa.array(sorted(trial_ids))))
    latest: dict[str, dict] = {}
    for row in sorted(trials.to_pylist(), key=lambda r: (r["finished_at"] is not None, r["finished_at"])):
        latest[row["trial_id"]] = row
    runs = {row["run_id"] for row in latest.values()}
    utterances = store.read("utterances", sweep)
    by_run: dict[str, dict[str, dict]] = collections.defaultdict(dict)
    for u in utterances.filter(pc.is_in(utterances["run_id"], value_set=pa.array(sorted(runs)))
                               ).to_pylist():
        by_run[u["run_id"]][u["utt_id"]] = u  # a row in a part file and a per-trial file counts once
    return {trial_id: (row, list(by_run[row["run_id"]].values())) for trial_id, row in latest.items()}


def run_race(trials: list[Trial], to_run: set[str], store: Store, on_outcome: OnOutcome, race: Adaptive,
             retries: int = 2, wait_timeout_s: float = 0.0, rerun: bool = False) -> Summary:
    """Race every group of `trials`; those in `to_run` are run (continuing from their rows unless `rerun`), the
    others are finished (ok or stopped) and take part with their rows."""
    dispatcher = RaceDispatcher(store, on_outcome, retries, race)
    entries = [dispatcher.add(trial) for trial in trials]
    on_disk = {} if rerun else latest_rows(store, trials[0].sweep if trials else "", {t.trial_id for t in trials})
    for entry in entries:
        row, utterances = on_disk.get(entry.trial.trial_id, (None, []))
        resumable = row is not None and row["status"] in ("racing", "stopped", "ok")
        if resumable and (row["status"] == "racing" or entry.trial.trial_id not in to_run):
            dispatcher.resume(entry, row, utterances)
        elif entry.trial.trial_id not in to_run:
            entry.state = row["status"] if row else "failed"  # unsupported or left out: not in the race
    return dispatcher.start(wait_timeout_s)
