"""Cluster room: start Ray head and worker nodes labelled with their hardware, and a local several-node cluster."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workers.device import HW_CLASSES
from workers.hardware import CORES_ENV, DEVICE_TOKEN, SIMULATED_CHIP_LABEL, Hardware, probe, simulated_chip_name
from workers.models import cache_root

# Token authentication on every process of a cluster: a node without the head's token cannot join.
AUTH_ENV = {"RAY_AUTH_MODE": "token"}
# Ray starts its workers at niceness 15, so every process of normal priority on a node (the driver, another job,
# a browser) takes the cores from a trial's timed passes first: a trial runner competes as an equal instead.
# Where a user exported their own RAY_worker_niceness, theirs is kept.
WORKER_PRIORITY_ENV = {"RAY_worker_niceness": "0"}
LOCAL_NODE_LABEL = "quantsweep/local-node"  # the name `cluster local` gave a node (kill_node takes it)


def device_tokens(hardware: Hardware) -> int:
    """One timing token per physical device: each GPU, else the node as one device."""
    if hardware.hw_class == "cuda" and not hardware.simulated:
        import torch

        return torch.cuda.device_count()
    return 1


def ray_start_args(hardware: Hardware, address: str | None, extra_labels: dict[str, str], tokens: int,
                   port: int | None = None, bind: str = "127.0.0.1", block: bool = False,
                   num_cpus: int | None = None, cores: str | None = None) -> list[str]:
    labels = hardware.labels(cores) | extra_labels
    args = [sys.executable, "-m", "ray.scripts.scripts", "start", "--disable-usage-stats",
            f"--labels={','.join(f'{k}={v}' for k, v in labels.items())}",
            f"--resources={json.dumps({DEVICE_TOKEN: tokens})}"]
    if address:
        args.append(f"--address={address}")
    else:
        args += ["--head", f"--port={port or 6379}", "--include-dashboard=false"]
    if bind:
        args.append(f"--node-ip-address={bind}")
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    if block:
        args.append("--block")
    return args


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--label {pair!r}: write key=value")
        labels[key] = value
    return labels


def node_environment(cores: str | None = None) -> dict[str, str]:
    env = WORKER_PRIORITY_ENV | os.environ | AUTH_ENV
    if cores:
        env[CORES_ENV] = cores
    return env


@dataclass
class LocalCluster:
    """What `cluster local` started: the process group of each node, so `cluster down` stops only those."""

    address: str
    groups: dict[str, int] = field(default_factory=dict)  # node name -> process group id
    logs: str = ""

    @staticmethod
    def state_file() -> Path:
        return cache_root() / "cluster-local.json"

    def save(self) -> None:
        self.state_file().parent.mkdir(parents=True, exist_ok=True)
        self.state_file().write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls) -> LocalCluster | None:
        path = cls.state_file()
        return cls(**json.loads(path.read_text())) if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> int:
    # Each node in its own session: killing its process group stops that node and nothing else.
    with open(log, "ab") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return process.pid


def parse_nodes(text: str) -> list[tuple[str, str | None]]:
    """`cuda,x86-cpu:chip-a,x86-cpu:chip-b` -> one (class, simulated chip or None) per node."""
    nodes = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        hw_class, _, chip = entry.partition(":")
        if hw_class not in HW_CLASSES:
            raise ValueError(f"--nodes {text!r}: {hw_class!r} is not a class ({', '.join(HW_CLASSES)})")
        if chip and chip != simulated_chip_name(chip):
            raise ValueError(f"--nodes {text!r}: chip {chip!r} must be letters, digits and -_. "
                             f"(e.g. {simulated_chip_name(chip)!r})")
        nodes.append((hw_class, chip or None))
    if not nodes:
        raise ValueError(f"--nodes {text!r}: name at least one class ({', '.join(HW_CLASSES)})")
    return nodes


def start_local(classes: list[str | tuple[str, str | None]], cpus_per_node: int = 1,
                timeout_s: float = 60.0) -> LocalCluster:
    """A head with no device token plus one worker node per listed class (or (class, simulated chip)), all on
    this machine."""
    if LocalCluster.load():
        raise RuntimeError(f"a local cluster is already up ({LocalCluster.state_file()}); `quantsweep cluster down` first")
    port = free_port()
    logs = cache_root() / f"cluster-local-{port}"
    logs.mkdir(parents=True, exist_ok=True)
    env = node_environment()
    real = probe()
    head = ray_start_args(real, None, {}, tokens=0, port=port, block=True, num_cpus=0)
    cluster = LocalCluster(address=f"127.0.0.1:{port}", logs=str(logs))
    cluster.groups["head"] = _spawn(head, env, logs / "head.log")
    cluster.save()
    try:
        _wait_for(cluster.address, nodes=1, timeout_s=timeout_s)
        for entry in classes:
            hw_class, chip = entry if isinstance(entry, tuple) else (entry, None)
            # One node at a time: raylets starting together on a small machine time out against the GCS.
            _add_node(cluster, hw_class, cpus_per_node, timeout_s, chip)
    except BaseException:
        stop_local()
        raise
    return cluster


def add_local_node(hw_class: str, cpus: int = 1, timeout_s: float = 60.0, chip: str | None = None) -> str:
    """One more labelled node in the running local cluster (e.g. to replace a killed one); its name."""
    cluster = LocalCluster.load()
    if cluster is None:
        raise RuntimeError("no local cluster is up: `quantsweep cluster local` first")
    return _add_node(cluster, hw_class, cpus, timeout_s, chip)


def _add_node(cluster: LocalCluster, hw_class: str, cpus: int, timeout_s: float, chip: str | None = None) -> str:
    """A node of `hw_class` (simulated where this machine is not one), or standing for the simulated `chip`."""
    name = f"{len(cluster.groups) - 1}-{hw_class}" + (f"-{chip}" if chip else "")
    labels = {LOCAL_NODE_LABEL: name} | ({SIMULATED_CHIP_LABEL: chip} if chip else {})
    args = ray_start_args(probe(simulate=hw_class, chip=chip), cluster.address, labels, tokens=1, block=True,
                          num_cpus=cpus)
    cluster.groups[name] = _spawn(args, node_environment(), Path(cluster.logs) / f"{name}.log")
    cluster.save()
    _wait_for(cluster.address, nodes=1, timeout_s=timeout_s, named=name)
    return name


def _wait_for(address: str, nodes: int, timeout_s: float, named: str | None = None) -> None:
    """Poll the cluster from a throwaway process until `nodes` are alive (a driver here would pin the session).

    With `named`, only the node of that local name counts: a killed node may still look alive for a while.
    """
    probe_code = ("import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR'); "
                  "print(sum(1 for n in ray.nodes() if n['Alive'] and (not sys.argv[2] or "
                  f"(n.get('Labels') or {{}}).get('{LOCAL_NODE_LABEL}') == sys.argv[2])))")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run([sys.executable, "-c", probe_code, address, named or ""], capture_output=True, text=True,
                              env=node_environment())
        if done.returncode == 0 and done.stdout.strip().isdigit() and int(done.stdout.strip()) >= nodes:
            return
        time.sleep(1.0)
    raise TimeoutError(f"cluster at {address} did not reach {nodes} live nodes in {timeout_s:.0f} s")


def stop_local() -> list[str]:
    """Kill the process groups `cluster local` started, workers first; nothing else on the machine."""
    cluster = LocalCluster.load()
    if cluster is None:
        return []
    stopped = []
    for name, group in sorted(cluster.groups.items(), key=lambda kv: kv[0] == "head"):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        stopped.append(name)
    LocalCluster.state_file().unlink()
    shutil.rmtree(cluster.logs, ignore_errors=True)  # the nodes' logs matter while they run, not after
    return stopped


def kill_node(name: str) -> None:
    """kill -9 every process of one local node (fault-tolerance tests and demos)."""
    cluster = LocalCluster.load()
    if cluster is None or name not in cluster.groups:
        raise KeyError(f"no local node {name!r}")
    os.killpg(cluster.groups[name], signal.SIGKILL)
