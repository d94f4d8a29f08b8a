"""Runtime registry: the deployable's `runtime` name -> what evaluates it (torch, ctranslate2, whispercpp)."""
from __future__ import annotations

from workers.runtimes.base import Deployable, Runtime
from workers.runtimes.ctranslate2 import CTranslate2Runtime
from workers.runtimes.torch import TorchRuntime
from workers.runtimes.whispercpp import WhisperCppRuntime

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (TorchRuntime(), CTranslate2Runtime(), WhisperCppRuntime())}


def runtime_of(deployable: Deployable) -> Runtime:
    return RUNTIMES[deployable.runtime]
