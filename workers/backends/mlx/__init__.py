"""Backend `mlx`: Whisper in mlx-whisper's layout, quantized by MLX's `nn.quantize`, run by mlx-whisper."""
from __future__ import annotations

from workers.backends.mlx.export import MlxExporter
from workers.backends.mlx.runtime import MlxRuntime

LIBRARIES = (MlxExporter,)
RUNTIMES = (MlxRuntime(),)
