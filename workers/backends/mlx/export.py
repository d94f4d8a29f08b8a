"""Backend `mlx`, export: the transformers checkpoint renamed into mlx-whisper's layout, quantized with MLX's
`nn.quantize`, saved as mlx-whisper's `load_model` reads it (config.json with `quantization`, weights.safetensors).

mlx-whisper's wheel carries the loader but not the conversion script (mlx-examples' whisper/convert.py); the
renaming here is that script's (transformers -> OpenAI names, conv weights to MLX's (out, kernel, in)), and the
quantization is the same call it makes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workers.backends.mlx.config import MlxConfig
from workers.device import Device
from workers.backends.base import Artifact, Calibration, Exporter, QuantConfig, count_params, dtype_name

if TYPE_CHECKING:
    from workers.models import LoadedModel

# transformers' WhisperForConditionalGeneration names -> mlx-whisper's, applied in order
RENAMES = (
    (r"^model\.encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^model\.decoder\.layer_norm\.", "decoder.ln."),
    (r"^model\.decoder\.embed_tokens\.weight$", "decoder.token_embedding.weight"),
    (r"^model\.decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
    (r"^model\.(encoder|decoder)\.layers\.", r"\1.blocks."),
    (r"^model\.encoder\.conv", "encoder.conv"),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"\.self_attn\.", ".attn."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.q_proj\.", ".query."), (r"\.k_proj\.", ".key."), (r"\.v_proj\.", ".value."), (r"\.out_proj\.", ".out."),
    (r"\.fc1\.", ".mlp1."), (r"\.fc2\.", ".mlp2."),
)
# the encoder's sinusoids are computed by mlx-whisper; the output projection is the token embedding
DROPPED = ("model.encoder.embed_positions.weight", "proj_out.weight")


def mlx_name(name: str) -> str:
    for pattern, replacement in RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def dimensions(config: Any) -> dict[str, int]:
    """mlx-whisper's ModelDimensions from a transformers WhisperConfig."""
    return {"n_mels": config.num_mel_bins, "n_audio_ctx": config.max_source_positions,
            "n_audio_state": config.d_model, "n_audio_head": config.encoder_attention_heads,
            "n_audio_layer": config.encoder_layers, "n_vocab": config.vocab_size,
            "n_text_ctx": config.max_target_positions, "n_text_state": config.d_model,
            "n_text_head": config.decoder_attention_heads, "n_text_layer": config.decoder_layers}


class MlxExporter(Exporter):
    library: ClassVar[str] = "mlx"
    config_type: ClassVar[type[QuantConfig]] = MlxConfig
    package: ClassVar[str | None] = "mlx_whisper"
    runtime: ClassVar[str] = "mlx"
    # mlx-whisper is OpenAI Whisper; it has no Moonshine or CTC model
    families: ClassVar[tuple[str, ...] | None] = ("whisper",)
    config: MlxConfig

    def missing(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("mlx") is None or importlib.util.find_spec("mlx_whisper") is None:
            return ("mlx and mlx-whisper are not installed on this node (pip install 'quantsweep[apple]' on a Mac, "
                    "'quantsweep[mlx-cpu]' for MLX's CPU build elsewhere)")
        return None

    def supports(self, device: Device) -> str | None:
        # Decided per class: Apple nodes compute on Metal; CPU nodes with the mlx-cpu build (rows say so).
        if device.torch_device.startswith("cuda"):
            return ("mlx runs on Apple silicon (Metal) and, as the mlx-cpu build, on CPUs; its CUDA build "
                    "(mlx[cuda]) is not one this backend installs or drives")
        return None

    def export(self, loaded: LoadedModel, workdir: Path, calibration: Calibration | None = None) -> Artifact:
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_flatten
        from mlx_whisper.whisper import ModelDimensions, Whisper

        out = workdir / "mlx"
        out.mkdir()
        dtype = getattr(mx, dtype_name(self.config.compute_dtype))
        dims = dimensions(loaded.model.config)
        model = Whisper(ModelDimensions(**dims), dtype)
        weights = []
        for name, tensor in loaded.model.state_dict().items():
            if name in DROPPED:
                continue
            value = tensor.detach().float().numpy()
            if ".conv" in name and value.ndim == 3:
                value = value.swapaxes(1, 2)  # torch (out, in, kernel) -> MLX (out, kernel, in)
            weights.append((mlx_name(name), mx.array(value).astype(dtype)))
        expected = {k for k, _ in tree_flatten(model.parameters())} - {"alignment_heads"}
        missing = expected - {k for k, _ in weights}
        if missing:
            raise ValueError(f"mlx-whisper parameters without a transformers weight: {sorted(missing)[:5]}")
        model.load_weights(weights, strict=False)
        nn.quantize(model, group_size=self.config.group_size, bits=self.config.weight_bits)
        quantized = [m for _, m in model.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]
        params = sum(m.weight.size * 32 // self.config.weight_bits for m in quantized)  # packed into uint32
        mx.save_safetensors(str(out / "weights.safetensors"), dict(tree_flatten(model.parameters())))
        (out / "config.json").write_text(json.dumps(
            {**dims, "model_type": "whisper",
             "quantization": {"group_size": self.config.group_size, "bits": self.config.weight_bits}}))
        return Artifact(self.runtime, out, {"dtype": dtype_name(self.config.compute_dtype)}, len(quantized), params,
                        count_params(loaded.model))
