"""Shared fixtures: the demo sweep run once per session through the real CLI (embedded Ray)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Test-only families and the `probe` quantizer (tests/plugins/trials.py), in this process, the CLI processes
# it starts, and every Ray worker those start (they inherit the environment): set before any registry loads.
os.environ["QUANTSWEEP_PLUGINS"] = "tests.plugins.trials"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as the Makefile exports it: nothing comes from the hub at run time
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
# torch's OpenMP threads spin while they wait for work by default: two test workers, their CLI processes and Ray's
# trial runners share 2 cores, and the spinning threads of one take the cores the others need (tests/test_evaluate.py
# beside tests/test_quantizers.py: 80 s and 129 CPU-seconds spinning, 68 s and 88 passive). Read when libgomp loads,
# so before torch is imported here (the workers and Ray's processes inherit it); a user's own setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import workers.metrics  # noqa: E402,F401  (the metrics register their columns: synthetic rows carry them too)


# How `make test` orders the suite for its workers (pytest-xdist `--dist loadfile --no-loadscope-reorder`: a file's
# tests stay on one worker, so its module fixtures run once, and files go out in collection order): the files of
# the longest tests first, so that no long one starts when the others are done (by `make test`'s --durations).
LONGEST_FIRST = ("test_demo_sweep.py", "test_faults.py", "test_cluster.py", "test_ptq.py",
                 "test_deployment_backends.py", "test_race_sweep.py", "test_runtimes.py", "test_memory.py",
                 "test_quantizers.py", "test_spec.py", "test_evaluate.py", "test_ctranslate2_conversion.py",
                 "test_reproducibility.py", "test_families.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its own order


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def quantsweep(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in its own process (it starts or joins Ray itself)."""
    done = subprocess.run([sys.executable, "-m", "sweep.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
    if check and done.returncode != 0:
        raise AssertionError(f"quantsweep {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="session")
def demo_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results of sweeps/demo.yaml: nine quantizations of real tiny.en over the 14 real sample clips."""
    results = tmp_path_factory.mktemp("demo") / "runs"
    done = quantsweep("run", "sweeps/demo.yaml", "--results", str(results))
    (results.parent / "terminal.txt").write_text(done.stdout + done.stderr)
    return results


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """Two busy processes beside the test, as on a loaded CI machine: timing- and race-prone code must cope."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module of small ops: on a 2-core VM each op pays milliseconds to wake another."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
