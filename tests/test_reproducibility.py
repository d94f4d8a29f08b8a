"""What a row needs to be reproduced (issue 16): hub revisions, the dataset's content in ids and on rows, the
versions of every package the workers import, memory that says it was not measured where it cannot be, and
`unsupported` rows for a missing package planned again once the package is there."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import soundfile as sf
from pydantic import ValidationError

from conftest import ROOT, quantsweep, write_spec
from results.store import Store
from sweep.plan import expand
from sweep.spec import SpecError, parse_spec
from workers import process_memory as memory
from workers.dataset_content import evaluated_hash
from workers.datasets import DatasetConfig, load_utterances
from workers.device import Device
from workers.hardware import LIBRARIES, probe
from workers.models import ModelConfig, load_model, transformers_dir
from workers.backends import LIBRARIES as BACKEND_LIBRARIES
from workers.backends.base import Target, build_artifact
from workers.backends.ggml.export import GgmlConfig, GgmlExporter
from workers.backends.ggml.runtime import evaluate_in_child
from workers.metrics.memory import memory_pass
from workers.trial import PACKAGE_MISSING, WorkerCache, run_trial

HUB_ID = "quantsweep-test/tiny-whisper"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _distribution(module: str) -> str | None:
    found = importlib.metadata.packages_distributions().get(module)
    return found[0].lower().replace("_", "-") if found else None


def test_versions_name_every_package_the_workers_import() -> None:
    imported = set()
    for path in (ROOT / "workers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("workers", "results", "__future__")}
    packages = {q.package.split(".")[0] for q in BACKEND_LIBRARIES.values() if q.package}
    distributions = {m: _distribution(m) for m in third_party | packages}
    assert None not in distributions.values(), distributions  # every import is an installed distribution
    assert set(distributions.values()) <= set(LIBRARIES), set(distributions.values()) - set(LIBRARIES)
    versions = probe().versions
    assert all(versions[d] == importlib.metadata.version(d) for d in distributions.values()), versions


def test_revisions_belong_to_hub_sources() -> None:
    with pytest.raises(ValidationError, match="revision: only hub models have revisions"):
        ModelConfig(name="m", packaged="whisper-tiny.en", revision="v1")
    with pytest.raises(ValidationError, match="revision: only source 'hf' has it"):
        DatasetConfig(name="d", source="samples", revision="v1")
    # unset, they stay out of the dump: ids of specs written before them do not change
    assert "revision" not in ModelConfig(name="m", hub=HUB_ID).model_dump()


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding two commits of one repository, main at the second, the hub unreachable:
    the layout huggingface_hub writes (snapshots/<commit>, refs/main), its files linked from tiny.en's."""
    source = Path(transformers_dir(ModelConfig(name="t", packaged="whisper-tiny.en")))
    repo = tmp_path / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    for commit in (COMMIT_A, COMMIT_B):
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in source.iterdir():
            (snapshot / file.name).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT_B)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return repo


def test_a_hub_model_loads_at_its_revision_and_rows_record_the_commit(hub_cache: Path) -> None:
    pinned = ModelConfig(name="tiny", family="tiny-whisper", hub=HUB_ID, revision=COMMIT_A)
    loaded = load_model(pinned)
    assert Path(loaded.path) == hub_cache / "snapshots" / COMMIT_A and loaded.revision == COMMIT_A
    # a branch resolves to its commit; without a revision the default branch's commit is still recorded
    assert load_model(pinned.model_copy(update={"revision": "main"})).revision == COMMIT_B
    assert load_model(pinned.model_copy(update={"revision": None})).revision == COMMIT_B
    with pytest.raises(FileNotFoundError, match="at revision 'v9' is not in the local Hugging Face cache"):
        load_model(pinned.model_copy(update={"revision": "v9"}))
    spec = parse_spec({"sweep": "rev", "models": [pinned.model_dump(mode="json")],
                       "quantization": [{"library": "none"}],
                       "datasets": [{"name": "one", "source": "samples", "max_utterances": 2}],
                       "eval": {"max_new_tokens": 2, "warmup_utterances": 0, "memory": "off"}})
    [trial] = expand(spec, "x86-cpu").trials
    assert json.loads(trial.config)["model"]["revision"] == COMMIT_A  # another commit is another trial
    cache = WorkerCache()
    row = run_trial(trial, probe(), cache).row
    assert row["status"] == "ok", row["error"]
    assert row["model_revision"] == COMMIT_A
    assert row["dataset_hash"] == evaluated_hash(load_utterances(trial.dataset))


def _clips(folder: Path, count: int) -> None:
    folder.mkdir()
    for u in load_utterances(DatasetConfig(name="s", source="samples", max_utterances=count)):
        name = u.utt_id.replace("/", "-")
        sf.write(folder / f"{name}.wav", u.audio, 16_000)
        (folder / f"{name}.txt").write_text(u.reference)


def test_dataset_content_is_in_the_trial_id_where_files_can_change_under_one_name(tmp_path: Path) -> None:
    _clips(tmp_path / "clips", 3)

    def plan(max_utterances: int | None = 2) -> dict[str, dict]:
        spec = parse_spec({"sweep": "content", "models": [{"name": "tiny", "packaged": "whisper-tiny.en"}],
                           "quantization": [{"library": "none"}],
                           "datasets": [{"name": "clips", "source": "folder", "path": str(tmp_path / "clips"),
                                         "max_utterances": max_utterances},
                                        {"name": "samples", "source": "samples"}]})
        return {t.dataset.name: {"id": t.trial_id, "config": json.loads(t.config)}
                for t in expand(spec, "x86-cpu").trials}

    first = plan()
    used = [u.utt_id for u in load_utterances(DatasetConfig(name="c", source="folder", path=str(tmp_path / "clips"),
                                                            max_utterances=2))]
    unused = next(p for p in (tmp_path / "clips").glob("*.txt") if p.stem not in used)
    unused.write_text("a reference no trial reads")
    assert plan()["clips"]["id"] == first["clips"]["id"]  # outside the subset: the same content
    (tmp_path / "clips" / f"{used[0]}.txt").write_text("an edited reference")
    assert plan()["clips"]["id"] != first["clips"]["id"]
    assert plan(None)["clips"]["id"] != plan()["clips"]["id"]
    # samples: the versions of the packages that ship its clips
    version = importlib.metadata.version("pytest-audioeval")
    assert f"pytest_audioeval={version}" in first["samples"]["config"]["dataset"]["content"]


def test_a_dataset_that_cannot_be_read_is_refused_at_plan_time(tmp_path: Path) -> None:
    (tmp_path / "list.jsonl").write_text('{"audio_filepath": "a.wav", "text": "x"}\n{broken\n')
    spec = parse_spec({"sweep": "bad", "models": [{"name": "tiny", "packaged": "whisper-tiny.en"}],
                       "quantization": [{"library": "none"}],
                       "datasets": [{"name": "m", "source": "manifest", "path": str(tmp_path / "list.jsonl")}]})
    with pytest.raises(SpecError, match=r"datasets\[0\]: manifest .*list.jsonl line 2: malformed JSON"):
        expand(spec, "x86-cpu")


def test_cpu_memory_is_unmeasured_with_its_reason_where_the_platform_cannot_reset_its_peak(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform without Linux's /proc (macOS): every CPU path leaves the figure NULL and says why."""
    spec = parse_spec({"sweep": "mem", "models": [{"name": "tiny", "family": "tiny-whisper",
                                                   "packaged": "whisper-tiny.en"}],
                       "quantization": [{"library": "none"}],
                       "datasets": [{"name": "one", "source": "samples", "max_utterances": 1}],
                       "eval": {"max_new_tokens": 2, "warmup_utterances": 0, "threads": 1}})
    [trial] = expand(spec, "x86-cpu").trials
    hardware, cache = probe(), WorkerCache()
    clips = cache.utterances(trial.dataset)
    # whisper.cpp's isolated run, on tiny-whisper written in ggml's format (its plan rule is Whisper's family)
    ggml = build_artifact(GgmlExporter(GgmlConfig(format="q8_0")), cache.model(trial.model)[0])
    target = Target(Device("x86-cpu", "cpu"), trial.eval, "en", 1)
    measured = [run_trial(trial, hardware, cache).row, evaluate_in_child(str(ggml.path), target, clips).columns]
    assert all(m["peak_mem_bytes"] > 0 and m["peak_mem_kind"] for m in measured), measured
    monkeypatch.setattr(memory, "PROC_SELF", tmp_path / "no-proc")
    row = run_trial(trial, hardware, cache).row  # inline, in the worker
    assert row["status"] == "ok" and row["rtf"] is not None, row["error"]
    assert row.get("peak_mem_bytes") is None and row["peak_mem_null_reason"] == memory.NO_RESET_REASON, row
    columns = evaluate_in_child(str(ggml.path), target, clips).columns
    assert "peak_mem_bytes" not in columns and columns["peak_mem_null_reason"] == memory.NO_RESET_REASON
    assert memory_pass(trial, hardware, clips, None, None) == {"peak_mem_null_reason": memory.NO_RESET_REASON}


def test_unsupported_for_a_missing_package_is_planned_again_once_it_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "quantsweep_probe_dependency"
    spec = write_spec(tmp_path / "s.yaml", {
        "sweep": "missing", "results": str(tmp_path / "r"),
        "models": [{"name": "noop", "family": "noop", "local": str(ROOT)}],
        "quantization": [{"library": "probe", "name": "needs", "needs_package": module},
                         {"library": "probe", "name": "plain"}],
        "datasets": [{"name": "one", "source": "samples", "max_utterances": 1}],
        "eval": {"warmup_utterances": 0}})
    quantsweep("run", str(spec))
    rows = {r["quantization"]: r for r in Store(str(tmp_path / "r")).read("trials", "missing").to_pylist()}
    assert rows["needs"]["status"] == "unsupported" and rows["needs"]["error_type"] == PACKAGE_MISSING
    assert rows["plain"]["status"] == "ok"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / f"{module}.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ["PYTHONPATH"]]))
    done = quantsweep("run", str(spec))
    assert "1 already done, 1 to run" in " ".join(done.stderr.split())
    rows = {r["quantization"]: r for r in Store(str(tmp_path / "r")).read("trials", "missing").to_pylist()}
    assert rows["needs"]["status"] == "ok" and rows["needs"]["error_type"] is None
    shutil.rmtree(tmp_path / "site")
