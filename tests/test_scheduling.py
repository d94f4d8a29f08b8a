"""Placement and exclusivity decisions, on simulated node descriptions (no GPU or second machine here)."""
from __future__ import annotations

import pytest

from sweep.baselines import Baselines, setup
from sweep.cluster import device_tokens, parse_nodes, ray_start_args
from sweep.plan import baseline_for, expand
from sweep.spec import parse_spec
from sweep.scheduler import Node, check_ray_version, cores_exclusive, runner_options
from workers.hardware import CORES_LABEL, SIMULATED_CHIP_LABEL, Placement, node_hardware, parse_cores, probe


def node(name: str, host: str = "m1", cores: set[int] | None = None, tokens: int = 1, hw_class: str = "x86-cpu",
         simulated: bool = False) -> Node:
    return Node(name.encode().hex().ljust(56, "0"), hw_class, "chip", simulated, host, tokens, tokens, frozenset(cores) if cores else None)


def test_one_node_alone_on_its_host_is_exclusive() -> None:
    nodes = [node("a"), node("b", host="m2")]
    assert cores_exclusive(nodes[0], nodes) and cores_exclusive(nodes[1], nodes)


def test_nodes_sharing_a_hosts_cores_are_not_exclusive() -> None:
    nodes = [node("a"), node("b")]  # `cluster local`: two unpinned nodes on one machine
    assert not cores_exclusive(nodes[0], nodes)
    pinned_and_not = [node("a", cores={0, 1}), node("b")]
    assert not cores_exclusive(pinned_and_not[0], pinned_and_not)
    overlapping = [node("a", cores={0, 1}), node("b", cores={1, 2})]
    assert not cores_exclusive(overlapping[0], overlapping)


def test_disjoint_pinned_cores_are_exclusive() -> None:
    nodes = [node("a", cores={0, 1}), node("b", cores={2, 3})]
    assert cores_exclusive(nodes[0], nodes) and cores_exclusive(nodes[1], nodes)


def test_a_cpu_node_with_several_runners_is_not_exclusive() -> None:
    many = node("a", tokens=2)
    assert not cores_exclusive(many, [many])


def test_gpu_runners_ask_ray_for_a_gpu_of_their_own() -> None:
    gpu = runner_options(node("g", hw_class="cuda", tokens=8), "cuda")
    assert gpu["num_gpus"] == 1 and gpu["resources"] == {"quantsweep_device": 1}
    assert gpu["label_selector"] == {"quantsweep/hw-class": "cuda"}
    simulated = runner_options(node("s", hw_class="cuda", simulated=True), "cuda")
    assert "num_gpus" not in simulated  # a simulated GPU node has no GPU to give
    assert "num_gpus" not in runner_options(node("c"), "x86-cpu")
    assert "label_selector" not in runner_options(node("c"), "chip:epyc")


def test_a_simulated_node_has_one_device_token_and_pinned_cores_are_a_label() -> None:
    hardware = probe(simulate="cuda")
    assert device_tokens(hardware) == 1
    args = ray_start_args(hardware, "127.0.0.1:1", {}, 1, cores="2-3,0")
    labels = next(a for a in args if a.startswith("--labels="))
    assert f"{CORES_LABEL}=0,2,3" in labels
    assert parse_cores("0-2,5") == {0, 1, 2, 5}
    with pytest.raises(ValueError, match="--cores 'x-1'"):
        parse_cores("x-1")


def test_ray_without_token_authentication_is_refused() -> None:
    check_ray_version("2.52.0")
    with pytest.raises(RuntimeError, match="Ray 2.49.1 has no token authentication.*>= 2.52.0"):
        check_ray_version("2.49.1")


def test_each_placement_gets_one_fp32_run_of_what_the_sweep_compares() -> None:
    spec = parse_spec({"sweep": "b", "models": [{"name": "tiny", "packaged": "whisper-tiny.en"}],
                       "quantization": [{"library": "hqq", "weight_bits": 4}, {"library": "none"},
                                        {"library": "hqq", "weight_bits": 3}],
                       "datasets": [{"name": "one", "source": "samples", "max_utterances": 1}]})
    w4, fp32, w3 = trials = expand(spec, "x86-cpu").trials
    chip_a, chip_b, chip_c = (Placement("x86-cpu", chip, "g", False) for chip in ("chip-a", "chip-b", "chip-c"))
    baselines = Baselines(planned=trials, to_run=trials)
    # w4 reaches chip b before the sweep's own fp32 run went anywhere: that run may still land there
    assert baselines.placed(w4, chip_b) == []
    # the fp32 run goes to chip a: chip b, which ran w4, gets one of its own, once
    [added] = baselines.placed(fp32, chip_a)
    assert added.placement == chip_b and added.quantization.label() == "fp32" and added.trial_id == baseline_for(
        w3, chip_b).trial_id  # its id is the placement's, whichever trial asked for it
    assert baselines.placed(w3, chip_b) == [] and baselines.placed(w3, chip_a) == [] and baselines.added == 1
    assert [b.placement for b in baselines.placed(w3, chip_c)] == [chip_c]
    # the fp32 run's worker died: back in the queue, it covers nothing until placed again (then on chip c)
    baselines.requeued(fp32)
    assert baselines.placed(w3, chip_a) == []  # chip a may get it again
    assert baselines.placed(fp32, chip_c) == [baseline_for(fp32, chip_a)]
    # recorded before this run: nothing to add; a sweep that plans no fp32 run gets none
    recorded = {(*setup(w4), chip_b)}
    assert Baselines(trials, [w4], recorded).placed(w4, chip_b) == []
    assert Baselines([w4, w3], [w4, w3]).placed(w4, chip_b) == []


def test_a_simulated_chip_is_a_simulated_node_of_its_class() -> None:
    hardware = probe(simulate="x86-cpu", chip="chip-a")  # this machine's own class, another chip: simulated
    assert hardware.hw_class == "x86-cpu" and hardware.simulated and hardware.chip.startswith("simulated chip-a on ")
    assert node_hardware(hardware.labels() | {SIMULATED_CHIP_LABEL: "chip-a"}).placement == hardware.placement
    assert parse_nodes("cuda,x86-cpu:chip-a") == [("cuda", None), ("x86-cpu", "chip-a")]
    with pytest.raises(ValueError, match="--chip 'chip a': give it with --simulate CLASS"):
        probe(simulate="x86-cpu", chip="chip a")
    with pytest.raises(ValueError, match="'gpu' is not a class"):
        parse_nodes("gpu:chip-a")
