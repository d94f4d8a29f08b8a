"""The device a trial runs on: its hardware class and the torch device string, as quantizers see it."""
from __future__ import annotations

from dataclasses import dataclass

HW_CLASSES = ("cuda", "apple", "x86-cpu", "arm-cpu")


@dataclass(frozen=True)
class Device:
    hw_class: str  # one of HW_CLASSES
    torch_device: str = "cpu"  # "cpu", "cuda:0", "mps"
    chip: str = ""
    isa_flags: tuple[str, ...] = ()
    simulated: bool = False  # labelled as hw_class but executing on the CPU (tests, `cluster local`)

    @property
    def is_cpu(self) -> bool:
        return self.torch_device == "cpu"
