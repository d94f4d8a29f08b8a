"""Backend `onnxruntime`: Whisper exported to ONNX, quantized by ONNX Runtime's tools, run by its sessions."""
from __future__ import annotations

from workers.backends.onnxruntime.export import OnnxRuntimeExporter
from workers.backends.onnxruntime.runtime import OnnxRuntimeRuntime

LIBRARIES = (OnnxRuntimeExporter,)
RUNTIMES = (OnnxRuntimeRuntime(),)
