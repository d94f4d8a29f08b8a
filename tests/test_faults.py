"""Faults on the embedded Ray: crashing trials, a killed driver, two drivers on one results directory, URIs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from conftest import ROOT, quantsweep, write_spec
from results.store import Store
from sweep.plan import expand
from sweep.spec import load_spec
from workers.hardware import probe


def probe_spec(name: str, results: Path, entries: list[dict], **extra: object) -> dict:
    return {
        "sweep": name, "results": str(results),
        "models": [{"name": "noop", "family": "noop", "local": str(ROOT)}],
        "quantization": [{"library": "probe", **e} for e in entries],
        "datasets": [{"name": "one", "source": "samples", "max_utterances": 1}],
        "eval": {"warmup_utterances": 0},
    } | extra


def rows(results: Path | str, sweep: str) -> list[dict]:
    return Store(str(results)).read("trials", sweep).to_pylist()


def test_raising_and_segfaulting_trials_become_rows_and_the_sweep_goes_on(tmp_path: Path) -> None:
    entries = [{"name": "fine"}, {"name": "raises", "crash": "raise"}, {"name": "segfaults", "crash": "segfault"},
               {"name": "bad-row", "crash": "bad-row"}, {"name": "fine-too", "sleep_s": 0.01}]
    spec = write_spec(tmp_path / "s.yaml", probe_spec("crashy", tmp_path / "r", entries))
    done = quantsweep("run", str(spec), "--retries", "1")
    by_name = {r["quantization"]: r for r in rows(tmp_path / "r", "crashy")}
    assert by_name["fine"]["status"] == by_name["fine-too"]["status"] == "ok"
    assert by_name["raises"]["status"] == "failed" and by_name["raises"]["error_type"] == "RuntimeError"
    assert "raised on purpose" in by_name["raises"]["error"] and "File " in by_name["raises"]["error"]  # traceback tail
    segv = by_name["segfaults"]
    assert segv["status"] == "failed" and segv["attempt"] == 2, segv
    assert "died 2 time(s)" in segv["error"]
    # its row could not be written where it ran: the driver records the trial failed, with the cause
    bad = by_name["bad-row"]
    assert bad["status"] == "failed" and "the trial's handling failed" in bad["error"] and "not a count" in bad["error"]
    assert "2 ok" in done.stderr and "3 failed" in done.stderr


def test_killed_driver_resumes_without_recomputing(tmp_path: Path) -> None:
    entries = [{"name": f"t{i}", "sleep_s": 0.4} for i in range(12)]
    spec = write_spec(tmp_path / "s.yaml", probe_spec("resume", tmp_path / "r", entries))
    driver = subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(spec)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    trial_dir = tmp_path / "r" / "table=trials" / "sweep=resume"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(trial_dir.glob("*.parquet"))) < 4:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, as a crash would
    driver.wait()
    # Workers write their own rows: one may finish its in-flight trial after the driver is gone.
    finished: dict[str, int] = {}
    while finished != (now := {p.name: p.stat().st_mtime_ns for p in trial_dir.glob("*.parquet")}):
        finished = now
        time.sleep(2)
    assert 4 <= len(finished) < 12
    # every trial file is whole (written under a temporary name, then renamed) ...
    assert all(pq.ParquetFile(trial_dir / name).metadata.num_rows == 1 for name in finished)
    # ... and a temporary file a killed writer left behind is no trial: not done, never read
    listing = sorted(finished)
    pending = next(t.trial_id for t in expand(load_spec(spec), probe().hw_class).trials
                   if f"{t.trial_id}.ok.parquet" not in finished)
    leftover = trial_dir / f"{pending}.ok.{'0' * 32}.parquet.tmp"
    leftover.write_bytes((trial_dir / listing[0]).read_bytes()[:100])  # half a Parquet file
    done = quantsweep("run", str(spec))
    assert f"{len(finished)} already done, {12 - len(finished)} to run" in done.stderr
    after = {p.name: p.stat().st_mtime_ns for p in trial_dir.glob("*.parquet")}
    assert len(after) == 12
    assert all(after[name] == mtime for name, mtime in finished.items()), "a finished trial was recomputed"
    assert sorted(r["status"] for r in rows(tmp_path / "r", "resume")) == ["ok"] * 12
    assert leftover.exists()  # left alone: what a reader ignores needs no clean-up to be safe


def test_retry_failed_runs_only_failed_trials(tmp_path: Path) -> None:
    spec_data = probe_spec("retry", tmp_path / "r", [{"name": "ok"}, {"name": "bad", "crash": "raise"}])
    spec = write_spec(tmp_path / "s.yaml", spec_data)
    quantsweep("run", str(spec))
    done = quantsweep("run", str(spec), "--retry-failed")
    assert "1 already done, 1 to run" in done.stderr


def test_two_drivers_on_one_results_directory(tmp_path: Path) -> None:
    entries = [{"name": f"t{i}", "sleep_s": 0.05} for i in range(8)]
    spec = write_spec(tmp_path / "s.yaml", probe_spec("shared", tmp_path / "r", entries))
    drivers = [subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(spec), "--rerun"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for d in drivers:
        assert d.wait(timeout=300) == 0, d.stderr.read()
    planned = json.loads(quantsweep("plan", str(spec), "--format", "json").stdout)
    # Both drivers ran every trial: each trial is one file (the later run replaced the earlier), one raw row.
    files = sorted(p.name for p in (tmp_path / "r" / "table=trials" / "sweep=shared").iterdir())
    assert files == sorted(f"{t['trial_id']}.ok.parquet" for t in planned)
    assert sorted(r["trial_id"] for r in rows(tmp_path / "r", "shared")) == sorted(t["trial_id"] for t in planned)
    assert not list((tmp_path / "r").rglob("*.tmp"))


def test_results_on_a_filesystem_uri(tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'uri-results'}"
    spec = write_spec(tmp_path / "s.yaml", probe_spec("uri", uri, [{"name": "a"}, {"name": "b"}]))
    quantsweep("run", str(spec))
    assert len(list((tmp_path / "uri-results" / "table=trials" / "sweep=uri").glob("*.parquet"))) == 2
    out = json.loads(quantsweep("query", "--results", uri, "--format", "json",
                                "SELECT count(*) AS n FROM trials WHERE status = 'ok'").stdout)
    assert out == [{"n": 2}]


def test_targeted_class_with_no_node_is_no_capacity(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", probe_spec("nocap", tmp_path / "r", [{"name": "a"}], hardware=["arm-cpu"]))
    plan = quantsweep("plan", str(spec))
    assert "arm-cpu" in plan.stdout and "no live node here" in plan.stderr and "arm-cpu" in plan.stderr
    quantsweep("run", str(spec), "--wait-timeout", "3")
    [row] = rows(tmp_path / "r", "nocap")
    assert row["status"] == "no_capacity" and "arm-cpu" in row["error"] and "within 3 s" in row["error"]
    # the row spans the driver's wait for a node: from when it began looking to when it gave up
    waited = (row["finished_at"] - row["started_at"]).total_seconds()
    assert 3 <= waited < 60, waited


def test_worker_reuses_loaded_model_and_quantization_across_datasets(tmp_path: Path) -> None:
    spec = {
        "sweep": "reuse", "results": str(tmp_path / "r"),
        "models": [{"name": "tiny-random", "family": "tiny-whisper", "packaged": "whisper-tiny.en"}],
        "quantization": [{"library": "hqq", "weight_bits": 4, "group_size": 32}, {"library": "none"}],
        "datasets": [{"name": "a", "source": "samples", "max_utterances": 1},
                     {"name": "b", "source": "samples", "max_utterances": 2}],
        "eval": {"max_new_tokens": 4, "warmup_utterances": 0},
    }
    done = quantsweep("run", str(write_spec(tmp_path / "s.yaml", spec)))
    found = sorted(rows(tmp_path / "r", "reuse"), key=lambda r: r["started_at"])
    assert [r["status"] for r in found] == ["ok"] * 4
    assert [r["model_reused"] for r in found] == [False, True, True, True]
    assert [(r["quantization"], r["quantized_reused"]) for r in found] == [
        ("hqq-w4-g32", False), ("hqq-w4-g32", True), ("fp32", False), ("fp32", True)]
    assert found[1]["quantize_s"] == found[0]["quantize_s"]  # the reused row reports the one quantization
    assert "models loaded 1x" in done.stderr


def test_a_reused_quantized_model_transcribes_as_it_did(tmp_path: Path) -> None:
    # Nothing between two trials of one quantization may change the model. bitsandbytes' 4-bit CPU kernel
    # (AVX512-BF16) repacks the weights on the first pass, and a state-dict walk after it (sizes were read
    # after the passes) unpacked them so that the next dataset's pass transcribed garbage (WER 1946%).
    spec = {
        "sweep": "kept", "results": str(tmp_path / "r"),
        "models": [{"name": "whisper-tiny.en", "packaged": "whisper-tiny.en"}],
        "quantization": [{"library": "bnb", "format": "nf4"}],
        "datasets": [{"name": "a", "source": "samples", "max_utterances": 1},
                     {"name": "b", "source": "samples", "max_utterances": 2}],
        "eval": {"max_new_tokens": 24, "warmup_utterances": 0},
    }
    quantsweep("run", str(write_spec(tmp_path / "s.yaml", spec)))
    found = rows(tmp_path / "r", "kept")
    assert sorted((r["status"], r["quantized_reused"]) for r in found) == [("ok", False), ("ok", True)]
    by_trial = {r["trial_id"]: r["dataset"] for r in found}
    scored = Store(str(tmp_path / "r")).read("utterances", "kept").to_pylist()
    [shared] = {u["utt_id"] for u in scored if by_trial[u["trial_id"]] == "a"}  # b's first clip too
    [first, again] = sorted((by_trial[u["trial_id"]], u["hypothesis"]) for u in scored if u["utt_id"] == shared)
    assert first[1] == again[1] and first[1].strip(), (first, again)


def test_a_failing_optional_measurement_is_null_with_its_reason_and_the_trial_stays_ok(tmp_path: Path) -> None:
    # the model is quantized again only in the isolated memory child: that is where these crash or hang
    entries = [{"name": "child-segfaults", "crash": "segfault", "crash_in": "isolated-child"},
               {"name": "child-raises", "crash": "raise", "crash_in": "isolated-child"},
               {"name": "child-hangs", "crash": "hang", "crash_in": "isolated-child"}]
    spec = probe_spec("optional", tmp_path / "r", entries)
    # the hung child is given half of what is left of the trial's limit, so the trial itself ends in time
    spec["eval"] |= {"memory": "isolated", "drift": "on", "trial_timeout_s": 90}
    quantsweep("run", str(write_spec(tmp_path / "s.yaml", spec)), "--retries", "0")
    by_name = {r["quantization"]: r for r in rows(tmp_path / "r", "optional")}
    for name, cause in (("child-segfaults", "ChildDied"), ("child-raises", "raised on purpose"),
                        ("child-hangs", "ChildTimedOut")):
        row = by_name[name]
        assert row["status"] == "ok" and row["attempt"] == 1 and row["rtf"] is not None, row["error"]
        assert row["peak_mem_bytes"] is None and cause in row["peak_mem_null_reason"], row["peak_mem_null_reason"]
        assert row["memory_s"] > 0 and row["drift_s"] is not None
        # the noop family has no logits: drift is NULL with that reason, not a failure
        assert row["kl_to_baseline"] is None and "family noop has no teacher-forcing hook" in row["kl_null_reason"]


def test_measurements_switched_off_say_so(tmp_path: Path) -> None:
    spec = probe_spec("off", tmp_path / "r", [{"name": "a"}])
    spec["eval"] |= {"memory": "off"}
    quantsweep("run", str(write_spec(tmp_path / "s.yaml", spec)))
    [row] = rows(tmp_path / "r", "off")
    assert row["status"] == "ok" and row["peak_mem_bytes"] is None and row["peak_mem_kind"] is None
    assert row["peak_mem_null_reason"] == "not measured (eval.memory: off)"
    assert row["kl_null_reason"] == "not measured (eval.drift: off)"  # drift is off by default


def test_a_hanging_trial_times_out_and_frees_its_runner(tmp_path: Path, cpu_hog: None) -> None:
    # `after` is queued on the same runner behind the hang: it is requeued, not charged, and runs on a new runner
    entries = [{"name": "hangs", "crash": "hang"}, {"name": "after"}, {"name": "later"}]
    spec = probe_spec("hang", tmp_path / "r", entries)
    # a trial of the others computes for about a second, but on a busy 2-core CI machine (this hog and the other
    # workers' sweeps beside it) a fresh runner's first trial waits for its process to start and import torch
    spec["eval"] |= {"trial_timeout_s": 50}
    started = time.monotonic()
    quantsweep("run", str(write_spec(tmp_path / "s.yaml", spec)), timeout=600)
    by_name = {r["quantization"]: r for r in rows(tmp_path / "r", "hang")}
    hung = by_name["hangs"]
    assert hung["status"] == "failed" and hung["error_type"] == "TrialTimeout", hung
    assert "eval.trial_timeout_s (50 s)" in hung["error"]
    assert by_name["after"]["status"] == by_name["later"]["status"] == "ok", {n: r["error"] for n, r in by_name.items()}
    assert by_name["after"]["attempt"] == 1
    assert time.monotonic() - started < 600
