"""Backend `ggml`: the model written in whisper.cpp's format, quantized by ggml's own quantizer, run by
whisper.cpp (pywhispercpp) in an isolated child process."""
from __future__ import annotations

from workers.backends.ggml.export import GgmlExporter
from workers.backends.ggml.runtime import WhisperCppRuntime

LIBRARIES = (GgmlExporter,)
RUNTIMES = (WhisperCppRuntime(),)
