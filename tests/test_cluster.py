"""Several real Ray nodes on this machine, labelled cuda, apple and x86-cpu (simulated: all run on the CPU)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, quantsweep, write_spec
from results.render import render_tables
from results.report import report_data
from results.store import Store
from results.views import BUILDERS
from sweep.cluster import LocalCluster, add_local_node, kill_node
from sweep.results_cli import open_results


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """cuda, apple and two x86-cpu nodes (the second x86 node is the survivor when the first is killed)."""
    done = quantsweep("cluster", "local", "--nodes", "cuda,apple,x86-cpu,x86-cpu", timeout=300)
    address = done.stdout.strip().splitlines()[-1]
    yield address
    quantsweep("cluster", "down")
    assert LocalCluster.load() is None


def tiny_spec(name: str, results: Path, quantization: list[dict], hardware: list[str]) -> dict:
    return {
        "sweep": name, "results": str(results),
        "models": [{"name": "tiny-random", "family": "tiny-whisper", "packaged": "whisper-tiny.en"}],
        "quantization": quantization,
        "datasets": [{"name": "samples", "source": "samples", "max_utterances": 2}],
        "hardware": hardware,
        "eval": {"max_new_tokens": 4, "warmup_utterances": 0},
    }


def test_workers_lists_labelled_nodes(cluster: str) -> None:
    out = quantsweep("workers", "--address", cluster).stdout
    lines = {hw_class: [line for line in out.splitlines() if f" {hw_class} " in line]
             for hw_class in ("cuda", "apple", "x86-cpu")}
    assert [len(v) for v in lines.values()] == [1, 1, 2]
    assert all("True" in line for line in lines["cuda"] + lines["apple"])
    assert all("False" in line for line in lines["x86-cpu"])


def test_trial_runners_compete_at_normal_priority(cluster: str) -> None:
    """Ray starts its workers at niceness 15, where any other process on a busy node would take the cores from a
    trial's timed passes; every node quantsweep starts, and the embedded Ray, runs them at 0."""
    code = ("import os,sys; from sweep import scheduler; import ray; "
            "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On; "
            "scheduler.connect(sys.argv[1] or None); nice = ray.remote(num_cpus=0)(lambda: os.nice(0)); "
            "print([ray.get(nice.options(scheduling_strategy=On(n.node_id, soft=False)).remote()) "
            "for n in scheduler.live_nodes()])")
    for address, nodes in ((cluster, 4), ("", 1)):
        done = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
        assert done.stdout.strip().endswith(str([0] * nodes)), (address, done.stdout, done.stderr[-2000:])


def test_every_trial_lands_on_its_class_and_unsupported_ones_are_rows(cluster: str, tmp_path: Path) -> None:
    quantization = [
        {"library": "none"},
        {"library": "torch", "scheme": "dynamic-int8"},  # CPU only: unsupported on cuda and apple
        {"library": "quanto", "weights": "float8"},  # no float8 on MPS: unsupported on apple
        {"library": "hqq", "weight_bits": 4, "group_size": 32},
    ]
    spec = write_spec(tmp_path / "s.yaml", tiny_spec("routing", tmp_path / "r", quantization, ["all"]))
    quantsweep("run", str(spec), "--address", cluster)
    rows = Store(str(tmp_path / "r")).read("trials", "routing").to_pylist()
    grid = {(r["quantization"], r["hw_class"]): r for r in rows}
    assert len(rows) == 4 * 3 == len(grid)
    unsupported = {k for k, r in grid.items() if r["status"] == "unsupported"}
    assert unsupported == {("torch-dynamic-int8", "cuda"), ("torch-dynamic-int8", "apple"), ("quanto-wf8", "apple")}
    assert all(grid[k]["error"] for k in unsupported)
    ran = [r for k, r in grid.items() if k not in unsupported]
    assert all(r["status"] == "ok" for r in ran), [(r["quantization"], r["error"]) for r in ran]
    nodes = _nodes(cluster)
    for r in ran:
        # The row's labels come from the node it ran on; that node must carry the targeted class.
        assert nodes[r["node_id"]] == r["hw_class"]
        assert r["hw_simulated"] == (r["hw_class"] != "x86-cpu")
        # every node of a local cluster uses all of this machine's cores: no timing here is exclusive
        assert r["timing_exclusive"] is False and r["host_group"] == r["host"]
    board = quantsweep("leaderboard", "--results", str(tmp_path / "r"), "--format", "markdown").stdout
    assert "cuda (simulated)" in board and "apple (simulated)" in board
    assert all(line.count(" !") == 1 for line in board.splitlines() if "| hqq-w4-g32 |" in line)
    # Timed phases on one node (one device token) never overlap.
    by_node: dict[str, list] = defaultdict(list)
    for r in ran:
        by_node[r["node_id"]].append((r["timed_started_at"], r["timed_finished_at"]))
    for spans in by_node.values():
        spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


def _nodes(address: str) -> dict[str, str]:
    code = ("import json,sys; from sweep import scheduler; scheduler.connect(sys.argv[1]); "
            "print(json.dumps({n.node_id: n.hw_class for n in scheduler.live_nodes()}))")
    done = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


KILL_MOMENTS = ("before any runner on it started", "mid-trial", "at the end of the sweep")


def test_node_killed_at_any_moment_never_ends_the_driver(cluster: str, tmp_path: Path, cpu_hog: None) -> None:
    """kill -9 of an x86 node before its runner started, mid-trial and as the last trials finish: every run
    exits 0 with every trial exactly once (raw files and rows, not the de-duplicating view)."""
    trials = 6
    quantization = [{"library": "probe", "name": f"t{i}", "sleep_s": 0.4} for i in range(trials)]
    for moment in KILL_MOMENTS:
        victim = add_local_node("x86-cpu")
        sweep = "killed-" + moment.split()[0]
        spec = tiny_spec(sweep, tmp_path / "r", quantization, ["x86-cpu"])
        spec["models"] = [{"name": "noop", "family": "noop", "local": str(ROOT)}]
        path = write_spec(tmp_path / f"{sweep}.yaml", spec)
        trial_dir = tmp_path / "r" / "table=trials" / f"sweep={sweep}"
        if moment == KILL_MOMENTS[0]:
            kill_node(victim)  # Ray still lists the node alive for a while: the driver places a runner there
        driver = subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(path), "--address", cluster],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if moment != KILL_MOMENTS[0]:
            wanted = 2 if moment == KILL_MOMENTS[1] else trials - 1
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and len(list(trial_dir.glob("*.parquet"))) < wanted:
                time.sleep(0.05)
            kill_node(victim)
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, (moment, err[-3000:])
        files = [p.name.split(".")[0] for p in trial_dir.glob("*.parquet")]
        rows = Store(str(tmp_path / "r")).read("trials", sweep).to_pylist()
        assert sorted(files) == sorted(r["trial_id"] for r in rows), moment
        assert sorted(r["quantization"] for r in rows) == sorted(f"t{i}" for i in range(trials)), moment
        assert all(r["status"] == "ok" for r in rows), (moment, [(r["quantization"], r["error"]) for r in rows])
        state = json.loads((tmp_path / "r" / "_runs" / f"{sweep}.json").read_text())
        assert state["state"] == "finished" and state["statuses"] == {"ok": trials}, moment


def test_two_chips_of_one_class_each_get_their_own_baseline_in_every_table(cluster: str, tmp_path: Path) -> None:
    """Two simulated arm-cpu chips share a class target: each chip that runs trials gets an fp32 run of its own
    (the planned one, or one the scheduler adds there), and every table shows both chips, each trial against
    its own chip's baseline; a later run finds those baselines on disk and adds none."""
    for chip in ("chip-a", "chip-b"):
        add_local_node("arm-cpu", chip=chip)
    # the probe leaves tiny-whisper as it is and sleeps 1.5 s per batch: long enough for both runners to take some
    probes = [{"library": "probe", "name": f"p{i}", "sleep_s": 1.5} for i in range(6)]
    spec = tiny_spec("chips", tmp_path / "r", [{"library": "none"}, *probes], ["arm-cpu"])
    done = quantsweep("run", str(write_spec(tmp_path / "s.yaml", spec)), "--address", cluster)
    rows = Store(str(tmp_path / "r")).read("trials", "chips").to_pylist()
    assert all(r["status"] == "ok" for r in rows), [(r["quantization"], r["error"]) for r in rows]
    chips = {r["hw_chip"] for r in rows}
    assert len(chips) == 2 and all("chip-a" in c or "chip-b" in c for c in chips), chips
    probed = {r["hw_chip"] for r in rows if r["library"] == "probe"}
    assert probed == chips, f"precondition: both chips ran probe trials ({probed})"
    fp32 = Counter(r["hw_chip"] for r in rows if r["library"] == "none")
    assert fp32 == {chip: 1 for chip in chips}, fp32  # one baseline per chip: the planned one and one added
    assert "1 fp32 baseline(s) added" in " ".join(done.stderr.split()) and len(rows) == 8

    # the views in this process (the CLI's own rendering is tested on synthetic results): bootstrap filled first
    _, con = open_results(str(tmp_path / "r"))

    def view(name: str) -> list[dict]:
        return [dict(zip(t.columns, r)) for t in BUILDERS[name](con, None) for r in t.rows]

    by_trial = {r["trial_id"]: r for r in rows}
    board = view("per-device")
    assert len(board) == 8 and {r["hw_class"] for r in board} == {"arm-cpu (simulated)"}
    for r in board:
        if r["is_baseline"]:
            continue
        assert by_trial[r["baseline_trial_id"]]["hw_chip"] == r["hw_chip"], r  # its own chip's fp32 run
        assert None not in (r["delta_wer"], r["speedup"], r["delta_wer_p"]), r
    for chip in chips:  # ranked per chip: each chip's ranks start at 1
        assert min(r["rank"] for r in board if r["hw_chip"] == chip) == 1
    cross = view("cross-hardware")
    fp32_row = next(r for r in cross if r["quantization"] == "fp32")
    hardware = {r["hardware"] for r in board}
    assert len(hardware) == 2 and all(fp32_row[f"{hw}.wer"] is not None for hw in hardware), fp32_row
    ladder = view("ladder")
    assert {r["hw_chip"] for r in ladder} == chips
    assert all(r["speedup"] is not None for r in ladder if r["quantization"].startswith("p"))
    assert {r["hw_chip"] for r in view("pareto")} == chips
    assert {r["hw_chip"] for r in view("hardware")} == chips
    markdown = render_tables(BUILDERS["per-device"](con, None), "markdown")
    assert all(f"### samples on {hw}" in markdown for hw in hardware), markdown[:2000]
    assert {p["hardware"] for p in report_data(con)["points"]} == hardware
    # a new trial lands on a chip whose baseline is on disk: none is added, and nothing else runs again
    spec["quantization"].append({"library": "probe", "name": "p6"})
    again = quantsweep("run", str(write_spec(tmp_path / "s.yaml", spec)), "--address", cluster)
    said = " ".join(again.stderr.split())
    assert "7 already done, 1 to run" in said and "baseline(s) added" not in said, said
    assert len(Store(str(tmp_path / "r")).read("trials", "chips")) == 9
