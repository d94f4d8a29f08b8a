"""Hardware room: what this node is (class, chip, ISA flags, memory, versions) and its Ray labels."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
from dataclasses import asdict, dataclass, field

from workers.device import HW_CLASSES, Device

# ISA flags that decide which quantized kernels a CPU has (fbgemm/onednn int8, AMX tiles, NEON dot products).
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16", "f16c", "fma", "neon", "asimd", "asimddp", "sve", "i8mm", "bf16")
CLASS_LABEL = "quantsweep/hw-class"
CHIP_LABEL = "quantsweep/hw-chip"
SIMULATED_LABEL = "quantsweep/simulated"
# Machines interchangeable for timing (same instance type, say): baselines may come from any of them.
HOST_GROUP_LABEL = "quantsweep/host-group"
# The chip a simulated node stands for (`--chip`): two simulated chips of one class on one machine.
SIMULATED_CHIP_LABEL = "quantsweep/simulated-chip"
# The cores a node's trials are pinned to (`--cores`), so the driver can tell whether two nodes share cores.
CORES_LABEL = "quantsweep/cores"
# One unit per physical device (a GPU, an Apple SoC, a CPU node's cores): a trial runner holds one for its
# whole life, so two timed trials never share a device.
DEVICE_TOKEN = "quantsweep_device"
CORES_ENV = "QUANTSWEEP_CORES"  # cores a node's trials are pinned to, e.g. "0-3" or "0,2"
# Every distribution the workers import (tests/test_reproducibility.py checks the list against their imports):
# runtimes, quantization libraries, audio decoding, scoring and the hub clients that fetch models and datasets.
LIBRARIES = ("torch", "transformers", "ray", "torchao", "hqq", "bitsandbytes", "optimum-quanto", "jiwer",
             "ctranslate2", "pywhispercpp", "datasets", "huggingface-hub", "tokenizers", "numpy", "soundfile", "soxr",
             "pydantic", "pytest-audioeval", "pyarrow", "onnxruntime", "onnx", "openvino", "nncf", "mlx", "mlx-cpu",
             "mlx-whisper")


@dataclass(frozen=True)
class Placement:
    """The unit results are compared within: one chip in one host group (machines interchangeable for timing,
    else the host alone), real or simulated; a row's hw_class, hw_chip, host_group and hw_simulated."""

    hw_class: str
    hw_chip: str
    host_group: str
    hw_simulated: bool

    def as_config(self) -> dict[str, str | bool]:
        return asdict(self)


@dataclass(frozen=True)
class Hardware:
    hw_class: str
    chip: str
    isa_flags: tuple[str, ...]
    memory_bytes: int
    cores: int
    host: str
    versions: dict[str, str] = field(default_factory=dict)
    simulated: bool = False
    host_group: str = ""  # the node's host-group label; empty means the host alone
    gpu: int | None = None  # the physical GPU Ray assigned this process (CUDA_VISIBLE_DEVICES shows only it)

    def device(self) -> Device:
        if self.simulated or self.hw_class not in ("cuda", "apple"):
            torch_device = "cpu"
        else:
            torch_device = "cuda:0" if self.hw_class == "cuda" else "mps"
        return Device(self.hw_class, torch_device, self.chip, self.isa_flags, self.simulated)

    def labels(self, cores: str | None = None) -> dict[str, str]:
        """Ray node labels (label-based scheduling): strings only, names under the quantsweep/ prefix."""
        labels = {
            CLASS_LABEL: self.hw_class,
            CHIP_LABEL: _label_value(self.chip),
            SIMULATED_LABEL: str(self.simulated).lower(),
        }
        if cores:
            labels[CORES_LABEL] = ",".join(map(str, sorted(parse_cores(cores))))
        return labels

    @property
    def placement(self) -> Placement:
        return Placement(self.hw_class, self.chip, self.host_group or self.host, self.simulated)

    @property
    def device_name(self) -> str:
        """The device as the machine numbers it: `cuda:<physical index>` for an assigned GPU."""
        device = self.device().torch_device
        return f"cuda:{self.gpu}" if device.startswith("cuda") and self.gpu is not None else device

    def as_dict(self) -> dict:
        return asdict(self)


def _label_value(text: str) -> str:
    # Ray label values: alphanumerics and -_. , at most 63 characters.
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-_.")
    return cleaned[:63] or "unknown"


def library_versions() -> dict[str, str]:
    """Installed version of each library that changes results; a missing one is `missing`, not an error."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags |= set(value.split())
    except OSError:
        pass
    return model, flags


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def probe(simulate: str | None = None, chip: str | None = None) -> Hardware:
    """This node's facts; `simulate` labels it as another class while it still executes on the CPU, and `chip`
    (with `simulate`) names the chip it stands for: a simulated node, even of this machine's own class."""
    import torch

    if chip is not None and (simulate is None or chip != simulated_chip_name(chip)):
        raise ValueError(f"--chip {chip!r}: give it with --simulate CLASS, in letters, digits and -_. "
                         f"(e.g. {simulated_chip_name(chip)!r})")
    cpu_model, cpu_flags = _cpuinfo()
    machine = platform.machine().lower()
    cpu_class = "arm-cpu" if machine in ("arm64", "aarch64") or machine.startswith("arm") else "x86-cpu"
    if torch.cuda.is_available():
        hw_class, real_chip = "cuda", torch.cuda.get_device_name(0)
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        hw_class, real_chip = "apple", cpu_model or "Apple silicon"
    else:
        hw_class, real_chip = cpu_class, cpu_model
    simulated = simulate is not None and (simulate != hw_class or chip is not None)
    if simulated:
        if simulate not in HW_CLASSES:
            raise ValueError(f"cannot simulate {simulate!r}: classes are {', '.join(HW_CLASSES)}")
        hw_class, real_chip = simulate, f"simulated {chip or simulate} on {cpu_model}"
    return Hardware(
        hw_class=hw_class,
        chip=real_chip,
        isa_flags=tuple(f for f in ISA_FLAGS if f in cpu_flags),
        memory_bytes=_memory_bytes(),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        host=socket.gethostname(),
        versions=library_versions(),
        simulated=simulated,
    )


def simulated_chip_name(chip: str) -> str:
    """A `--chip` name as a node label can carry it."""
    return _label_value(chip)


def node_hardware(labels: dict[str, str]) -> Hardware:
    """What a process on a labelled node is: this machine, or the class and chip the node's labels simulate."""
    def label(key: str, default: str | None) -> str | None:
        value = labels.get(key, default)
        return value[0] if isinstance(value, list) else value  # some Ray versions give label values as lists

    real = probe()
    labelled, chip = label(CLASS_LABEL, real.hw_class), label(SIMULATED_CHIP_LABEL, None)
    if labelled == real.hw_class and chip is None:
        return real
    return probe(simulate=labelled, chip=chip)


def parse_cores(spec: str) -> set[int]:
    """`0-3,6` -> {0, 1, 2, 3, 6}; a clear error names what cannot be read."""
    cores: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        try:
            cores |= set(range(int(low), int(high or low) + 1))
        except ValueError:
            raise ValueError(f"--cores {spec!r}: write core numbers and ranges such as 0-3,6") from None
    return cores


def pin_cores() -> None:
    """Pin this process to the node's cores (QUANTSWEEP_CORES) so neighbours on other cores never share them."""
    spec = os.environ.get(CORES_ENV)
    if spec and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, parse_cores(spec))
