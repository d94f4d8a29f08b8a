"""Backend `openvino`: Whisper converted by OpenVINO, weights compressed by NNCF, run by OpenVINO's CPU plugin."""
from __future__ import annotations

from workers.backends.openvino.export import OpenVinoExporter
from workers.backends.openvino.runtime import OpenVinoRuntime

LIBRARIES = (OpenVinoExporter,)
RUNTIMES = (OpenVinoRuntime(),)
