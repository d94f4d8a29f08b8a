"""Process memory room: the instruments of the memory metric (workers/metrics/memory.py), also read by runtimes
that measure in their own child: the resident set and its high-water mark, glibc's allocator settings, the
bytes of a model's tensors, and the GPU allocators' peaks.

Every CPU figure needs Linux's /proc: the resident set now (VmRSS) and a high-water mark that can be reset
(VmHWM, clear_refs). Elsewhere (macOS) there is no figure, only the reason: getrusage's ru_maxrss is the peak
since the process began, and a delta of two of them reads about zero once an earlier round peaked higher.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

CPU_KIND = "rss_hwm_delta_isolated"  # VmHWM during inference - VmRSS before the model, in a fresh child
# model_mem_bytes + VmHWM of the timed passes - VmRSS when they began, in the worker
TORCH_INLINE_KIND = "tensors_plus_rss_hwm_timed_delta"
# VmHWM of the timed passes - VmRSS before the runtime opened its artifact, in the worker
RUNTIME_INLINE_KIND = "rss_hwm_delta_open_to_timed"
NO_RESET_REASON = ("the resident-set high-water mark cannot be reset on this platform (no /proc/self/clear_refs; "
                   "getrusage's ru_maxrss only grows): not measured")
PROC_SELF = Path("/proc/self")  # where Linux shows this process's memory
# A runtime evaluated in an isolated child (whisper.cpp): VmHWM over its load and whole evaluation - VmRSS
# after its code was imported
ISOLATED_RUN_KIND = "rss_hwm_delta_isolated_run"
CUDA_KIND = "cuda_max_allocated_delta"
MPS_KIND = "mps_sampled_allocated_delta"
MPS_SAMPLE_S = 0.002


def _status_bytes(field: str) -> int | None:
    try:
        with open(PROC_SELF / "status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """The resident set now (Linux); None where the platform does not tell."""
    return _status_bytes("VmRSS")


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def fix_mmap_threshold() -> None:
    """Serve every block above 128 KiB (tensors) by mmap, returned to the OS when freed.

    glibc raises the threshold each time a mapped block is freed, after which large blocks come from the
    heap and linger there, fragmented: the resident set then depends on what ran before. Setting it once
    turns that adjustment off.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise), so RSS counts live memory only."""
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def reset_rss_peak() -> bool:
    """Linux resets VmHWM to the current RSS when "5" is written to clear_refs; False where it cannot."""
    try:
        with open(PROC_SELF / "clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def rss_peak() -> int | None:
    """The resident set's high-water mark since the last reset (Linux); None where the platform does not tell."""
    return _status_bytes("VmHWM")


def _tensor_storages(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """The plain tensors holding a tensor's data: tensor subclasses (torchao, quanto) hold several inner ones."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) is not torch.Tensor and not isinstance(tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        for name in names:
            yield from _tensor_storages(getattr(tensor, name))
    elif isinstance(tensor, nn.Parameter) and hasattr(tensor.data, "__tensor_flatten__") and type(tensor.data) is not torch.Tensor:
        yield from _tensor_storages(tensor.data)
    else:
        yield tensor


def model_mem_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors as resident (each storage once): packed weights, scales and zeros included.

    The state dict is walked rather than `parameters()`: packed int8 weights (torch.ao) and quantized
    buffers live there, and tied weights (Whisper's proj_out) share one storage that is counted once.
    """
    seen: set[tuple[str, int]] = set()
    alive: list[torch.Tensor] = []  # a freed temporary's address could come back and read as "seen"
    total = 0
    for value in model.state_dict(keep_vars=True).values():
        tensors = [value] if isinstance(value, torch.Tensor) else [v for v in _flatten(value) if isinstance(v, torch.Tensor)]
        for tensor in tensors:
            for inner in _tensor_storages(tensor):
                if inner.is_quantized:
                    inner = inner.int_repr()  # per-channel scales are small beside the int8 values
                alive.append(inner)
                storage = inner.untyped_storage()
                key = (str(inner.device), storage.data_ptr())
                if key not in seen:
                    seen.add(key)
                    total += storage.nbytes()
    return total


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


class Allocator(Protocol):
    """A GPU allocator's counters, as torch shows them: bytes held for tensors now, and (where it keeps one) the
    peak since a reset. Tests stand a simulated allocator in for a device this machine lacks."""

    kind: str  # the peak_mem_kind of a figure read from it
    has_peak: bool  # False: no peak counter, so device_peak samples `allocated` while the block runs

    def synchronize(self) -> None: ...

    def allocated(self) -> int: ...

    def reset_peak(self) -> None: ...

    def peak(self) -> int: ...


class CudaAllocator:
    kind, has_peak = CUDA_KIND, True

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def allocated(self) -> int:
        return int(torch.cuda.memory_allocated())

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated())


class MpsAllocator:
    kind, has_peak = MPS_KIND, False  # torch.mps has no peak counter

    def synchronize(self) -> None:
        torch.mps.synchronize()

    def allocated(self) -> int:
        return int(torch.mps.current_allocated_memory())

    def reset_peak(self) -> None:
        raise NotImplementedError("torch.mps keeps no peak")

    def peak(self) -> int:
        raise NotImplementedError("torch.mps keeps no peak")


def allocator_for(device: str) -> Allocator:
    if device.startswith("cuda"):
        return CudaAllocator()
    if device == "mps":
        return MpsAllocator()
    raise ValueError(f"{device}: CPU memory is measured from the resident set, not by a device allocator")


@contextmanager
def device_peak(device: str, allocated_before: int, result: dict[str, Any],
                allocator: Allocator | None = None) -> Iterator[dict[str, Any]]:
    """Peak memory of the block on a GPU, above `allocated_before` (what was allocated before the model existed),
    into `result` as the block ends: the allocator's own peak counter, reset when the block begins; without one,
    its allocation sampled every MPS_SAMPLE_S while the block runs."""
    allocator = allocator or allocator_for(device)
    if allocator.has_peak:
        allocator.synchronize()
        allocator.reset_peak()
        yield result
        allocator.synchronize()
        result.update(peak_mem_bytes=allocator.peak() - allocated_before, peak_mem_kind=allocator.kind)
        return
    peak = [allocator.allocated()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], allocator.allocated())
            time.sleep(MPS_SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        allocator.synchronize()
        done.set()
        sampler.join()
    peak[0] = max(peak[0], allocator.allocated())
    result.update(peak_mem_bytes=peak[0] - allocated_before, peak_mem_kind=allocator.kind)


def allocated(device: str) -> int:
    """Bytes the device's allocator holds for tensors now (0 on the CPU, which is measured otherwise)."""
    if device == "cpu":
        return 0
    allocator = allocator_for(device)
    allocator.synchronize()
    return allocator.allocated()


class InlineMemory:
    """CPU memory read around a trial's own timed passes in the worker: no second model, no second pass.

    `opening()` marks the resident set before a runtime opens its deployable; `on_timed` resets the kernel's
    high-water mark when the timed passes begin (after the warm-up, so lazily loaded kernels are not counted)
    and reads it when they end. Other runners are other processes: their memory is not in these figures.
    The worker keeps glibc's default allocator settings, as a user's process has them: fixing the mmap
    threshold (as the isolated child does) made the libraries that dequantize per call (bitsandbytes 4-bit,
    quanto) 50-65% slower. The passes' growth therefore counts what that allocator keeps as well.
    """

    def __init__(self) -> None:
        self.opened = self.started = self.peak = 0
        self.resettable = False

    def opening(self) -> None:
        release_freed_memory()
        self.opened = rss_bytes()

    def on_timed(self, starting: bool) -> None:
        if starting:
            release_freed_memory()
            self.started = rss_bytes()
            self.resettable = reset_rss_peak()
        else:
            self.peak = rss_peak()

    def columns(self, tensor_bytes: int | None) -> dict[str, Any]:
        """A torch model: its tensors plus the passes' growth; an artifact: growth from before it was opened."""
        if not self.resettable:
            return {"peak_mem_null_reason": NO_RESET_REASON}
        if tensor_bytes is not None:
            return {"peak_mem_bytes": tensor_bytes + max(0, self.peak - self.started), "peak_mem_kind": TORCH_INLINE_KIND}
        return {"peak_mem_bytes": max(0, self.peak - self.opened), "peak_mem_kind": RUNTIME_INLINE_KIND}
