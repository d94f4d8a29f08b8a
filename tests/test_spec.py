"""Spec validation and planning: malformed specs are refused with the field path, exit 2, nothing written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweep.plan import diff, expand
from sweep.spec import SpecError, json_schema, load_spec, parse_spec

BASE = {
    "sweep": "t",
    "models": [{"name": "whisper-tiny.en", "packaged": "whisper-tiny.en"}],
    "quantization": [{"library": "none"}, {"library": "hqq", "weight_bits": 4, "group_size": 64}],
    "datasets": [{"name": "samples", "source": "samples"}],
}


def with_(path: str, value: object) -> dict:
    """BASE with one value set at a dotted path (list indices as numbers)."""
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = spec
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return spec


DELETE = object()

MALFORMED = [
    (with_("quantization.1.weight_bits", 5), "quantization[1].weight_bits: 5 is not supported by hqq"),
    (with_("quantization.1.colour", "red"), "quantization[1].colour: unknown key"),
    (with_("quantization.0.library", "tensorrt"), "quantization[0]"),
    (with_("models.0.packaged", DELETE), "models[0]: give exactly one of packaged"),
    (with_("datasets.0.source", "youtube"), "datasets[0].source"),
    (with_("eval", {"batch_size": 0}), "eval.batch_size"),
    (with_("eval", {"timing_repeats": "many"}), "eval.timing_repeats"),
    (with_("hardware", ["tpu"]), "hardware[0]: 'tpu' is not a hardware target"),
    (with_("sweep", "bad name/with slash"), "sweep"),
    (with_("datasets", []), "datasets"),
    (with_("exclude", [{}]), "exclude[0]: an exclusion needs at least one of"),
    (with_("quantization.1.group_size", 0), "quantization[1].group_size"),
    (with_("quantization.0.dtype", "fp8"), "quantization[0].dtype: 'fp8' is not supported by none"),
    (with_("datasets.0.max_utterances", -1), "datasets[0].max_utterances"),
    (with_("unknown_axis", [1]), "unknown_axis: unknown key"),
]


@pytest.mark.parametrize("data,expected", MALFORMED, ids=[m[1].split(":")[0] for m in MALFORMED])
def test_malformed_spec_names_the_field(data: dict, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, "spec.yaml")
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_cli_refuses_bad_spec_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for i, (data, expected) in enumerate(MALFORMED[:3]):
        spec = tmp_path / f"bad{i}.yaml"
        spec.write_text(yaml.safe_dump(data | {"results": str(results)}))
        for command in ("run", "plan"):
            done = subprocess.run([sys.executable, "-m", "sweep.cli", command, str(spec)], capture_output=True, text=True)
            assert done.returncode == 2, done.stderr
            assert expected in done.stderr
            assert str(spec) in done.stderr
    assert not results.exists()


def test_unparseable_yaml_and_missing_file_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("sweep: [unclosed\n")
    for path in (broken, tmp_path / "absent.yaml"):
        done = subprocess.run([sys.executable, "-m", "sweep.cli", "plan", str(path)], capture_output=True, text=True)
        assert done.returncode == 2
        assert str(path) in done.stderr


def test_hqq_bits_message_lists_allowed_values() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(MALFORMED[0][0])
    assert "1, 2, 3, 4 or 8" in caught.value.problems[0]


def test_trial_id_is_stable_and_ignores_key_order() -> None:
    a = expand(parse_spec(BASE), "x86-cpu")
    reordered = {k: BASE[k] for k in reversed(list(BASE))}
    reordered["quantization"] = [{"group_size": 64, "weight_bits": 4, "library": "hqq"}, {"library": "none"}]
    b = expand(parse_spec(reordered), "x86-cpu")
    assert sorted(t.trial_id for t in a.trials) == sorted(t.trial_id for t in b.trials)
    assert len({t.trial_id for t in a.trials}) == 2
    # The id is a pure function of the config: a known value guards against accidental drift between machines.
    explicit_defaults = with_("quantization.0.dtype", "fp32")
    c = expand(parse_spec(explicit_defaults), "x86-cpu")
    assert {t.trial_id for t in c.trials} == {t.trial_id for t in a.trials}
    changed = expand(parse_spec(with_("quantization.1.group_size", 128)), "x86-cpu")
    assert len({t.trial_id for t in changed.trials} & {t.trial_id for t in a.trials}) == 1


def test_grid_exclusions_and_support() -> None:
    data = with_("hardware", ["local", "cuda"])
    data["quantization"].append({"library": "torch", "scheme": "dynamic-int8"})
    data["exclude"] = [{"library": "hqq", "hardware": "cuda"}]
    plan = expand(parse_spec(data), "x86-cpu", present=["x86-cpu"])
    assert plan.excluded == 1
    assert [(t.quantization.library, t.hardware) for t, _ in plan.unsupported] == [("torch", "cuda")]
    assert "CPU" in plan.unsupported[0][1]
    assert sorted((t.quantization.library, t.hardware) for t in plan.trials) == [
        ("hqq", "x86-cpu"), ("none", "cuda"), ("none", "x86-cpu"), ("torch", "x86-cpu")]
    assert plan.unplaced == ["cuda"]


def test_static_quantization_never_calibrates_on_evaluation_audio() -> None:
    data = with_("quantization", [{"library": "quanto", "weights": "int8", "activations": "int8",
                                   "calibration_dataset": "evalset"}])
    data["datasets"] = [{"name": "evalset", "source": "samples"}]
    data["calibration"] = [{"name": "evalset", "source": "samples"}]
    with pytest.raises(SpecError) as caught:
        expand(parse_spec(data), "x86-cpu")
    assert "distinct split" in str(caught.value)
    data["calibration"] = []
    data["quantization"][0]["calibration_dataset"] = "nowhere"
    with pytest.raises(SpecError, match="'nowhere' is not a calibration dataset"):
        expand(parse_spec(data), "x86-cpu")


def test_resume_diff() -> None:
    plan = expand(parse_spec(BASE), "x86-cpu")
    first, second = plan.trials
    finished = {first.trial_id: "ok", second.trial_id: "failed"}
    assert [t.trial_id for t in diff(plan.trials, finished).to_run] == [second.trial_id]
    assert diff(plan.trials, {first.trial_id: "ok", second.trial_id: "ok"}).to_run == []
    assert len(diff(plan.trials, finished, rerun=True).to_run) == 2
    assert [t.trial_id for t in diff(plan.trials, {first.trial_id: "failed"}, retry_failed=True).to_run] == [
        first.trial_id]


def test_json_schema_covers_every_library() -> None:
    schema = json_schema()
    text = str(schema)
    for library in ("none", "torch", "torchao", "hqq", "bnb", "quanto"):
        assert f"'{library}'" in text
    assert schema["additionalProperties"] is False


OLD_AND_NEW = [  # earlier spellings and today's words for the same quantization
    ({"library": "none", "dtype": "fp16"}, {"library": "none", "format": "fp16"}),
    ({"library": "torch", "scheme": "dynamic-int8"}, {"library": "torch", "format": "dynamic-int8"}),
    ({"library": "torchao", "scheme": "int8-dynamic"}, {"library": "torchao", "format": "int8-dynamic"}),
    ({"library": "bnb", "scheme": "nf4"}, {"library": "bnb", "format": "nf4"}),
    ({"library": "ggml", "type": "q5_0"}, {"library": "ggml", "format": "q5_0"}),
    ({"library": "ctranslate2", "compute_type": "int8_float32"}, {"library": "ctranslate2", "format": "int8_float32"}),
    ({"library": "quanto", "weights": "int4"}, {"library": "quanto", "weight_bits": 4}),
    ({"library": "quanto", "weights": "float8", "activations": "int8"},
     {"library": "quanto", "weight_bits": 8, "format": "float8", "act_bits": 8}),
]


@pytest.mark.parametrize("old,new", OLD_AND_NEW, ids=[str(sorted(o.items())) for o, _ in OLD_AND_NEW])
def test_earlier_spellings_plan_the_same_trials_with_a_warning(tmp_path: Path, old: dict, new: dict) -> None:
    planned = {}
    for which, entry in (("old", old), ("new", new)):
        path = tmp_path / f"{which}.yaml"
        path.write_text(yaml.safe_dump(with_("quantization", [entry])))
        notes: list[str] = []
        planned[which] = ([(t.trial_id, t.quantization.label(), t.describe()["scheme"])
                           for t in expand(load_spec(path, notes), "x86-cpu").trials], notes)
    assert planned["old"][0] == planned["new"][0]
    assert planned["new"][1] == []
    old_keys = sorted(set(old) - set(new))
    assert sorted(n.split(":")[0] for n in planned["old"][1]) == [f"quantization[0].{k}" for k in old_keys]
    assert all("deprecated, write" in n for n in planned["old"][1])


def test_act_bits_are_integer_bits_or_null_for_every_library() -> None:
    # act_bits 16 in ptq is int16 fake quantization; float activations are NULL everywhere, their width is
    # compute_dtype's
    data = with_("quantization", [{"library": "none", "format": "fp16"}, {"library": "hqq", "weight_bits": 4},
                                  {"library": "ptq", "weight_bits": 8, "act_bits": 16},
                                  {"library": "quanto", "weight_bits": 8}])
    rows = {t.quantization.library: t.describe() for t in expand(parse_spec(data), "x86-cpu").trials}
    assert rows["none"]["act_bits"] is None and rows["none"]["compute_dtype"] == "float16"
    assert rows["hqq"]["act_bits"] is None and rows["quanto"]["act_bits"] is None
    assert rows["ptq"]["act_bits"] == 16
