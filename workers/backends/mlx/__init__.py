"""Backend `mlx`: Whisper in mlx-whisper's layout, quantized by MLX's `nn.quantize`, run by mlx-whisper."""
