"""Progress room: one live bar per hardware class (done, running, failed, unsupported, ETA)."""
from __future__ import annotations

import collections
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from workers.trial import Trial


class SweepProgress:
    def __init__(self, console: Console, trials: list[Trial]):
        self.progress = Progress(
            TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        totals = collections.Counter(t.hardware for t in trials)
        for target, total in sorted(totals.items()):
            self.tasks[target] = self.progress.add_task(target, total=total, counts="")

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, trial: Trial, row: dict[str, Any]) -> None:
        target = trial.hardware
        if target not in self.tasks:  # rows recorded without running (unsupported) get a line of their own
            self.tasks[target] = self.progress.add_task(target, total=0, counts="")
        counts = self.counts[target]
        counts[row["status"]] += 1
        task = self.tasks[target]
        if trial.placement is not None:  # a baseline added for a chip that had none: one more than planned
            self.progress.update(task, total=(self.progress.tasks[task].total or 0) + 1)
        self.progress.update(task, counts=" ".join(f"{s} {n}" for s, n in sorted(counts.items())))
        if row["status"] != "unsupported" or self.progress.tasks[task].total:
            self.progress.advance(task)
        last = f"{row.get('quantization')} {row['status']}"
        if row["status"] == "ok" and row.get("wer") is not None:
            last += f" WER {row['wer'] * 100:.2f}% RTF {row['rtf']:.3f}"
        self.progress.console.print(f"  {target}: {row.get('model')} {last}", highlight=False)
