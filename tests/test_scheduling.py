"""Placement and exclusivity decisions, on simulated node descriptions (no GPU or second machine here)."""
from __future__ import annotations

import pytest

from sweep.cluster import device_tokens, ray_start_args
from sweep.scheduler import Node, check_ray_version, cores_exclusive, runner_options
from workers.hardware import CORES_LABEL, parse_cores, probe


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
