"""Runtime registry: the deployable's `runtime` name -> what evaluates it (torch, ctranslate2, whispercpp)."""
from __future__ import annotations

from workers.backends.mlx.runtime import MlxRuntime
from workers.backends.onnxruntime.runtime import OnnxRuntimeRuntime
from workers.backends.openvino.runtime import OpenVinoRuntime
from workers.runtimes.base import Deployable, Runtime
from workers.runtimes.ctranslate2 import CTranslate2Runtime
from workers.runtimes.torch import TorchRuntime
from workers.runtimes.whispercpp import WhisperCppRuntime

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (TorchRuntime(), CTranslate2Runtime(), WhisperCppRuntime(),
                                                     OnnxRuntimeRuntime(), OpenVinoRuntime(), MlxRuntime())}


def runtime_of(deployable: Deployable) -> Runtime:
    return RUNTIMES[deployable.runtime]
