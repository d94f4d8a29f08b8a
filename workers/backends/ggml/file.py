"""Runtime room, whisper.cpp's model file: a transformers Whisper written in ggml's format, quantized by ggml itself.

The layout is whisper.cpp's own (models/convert-h5-to-ggml.py): magic, 11 int32 hyper-parameters, the mel
filter bank, the GPT-2 byte-level vocabulary, then the tensors under OpenAI's names. 2-D weights are
quantized with `ggml_quantize_chunk` from the libggml-base that pywhispercpp bundles, so the bytes are the
ones whisper.cpp's own quantize tool would write.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

MAGIC = 0x67676D6C  # "ggml"
QUANT_VERSION = 2  # GGML_QNT_VERSION: a quantized file's ftype is 1000 * version + ggml_ftype


@dataclass(frozen=True)
class GgmlType:
    """One spec `type`: its ggml_type id (tensor headers), ggml_ftype id (file header) and block length."""

    ggml_type: int
    ftype: int
    block: int  # a row's length must be a multiple of this
    weight_bits: int


TYPES: dict[str, GgmlType] = {
    "f32": GgmlType(0, 0, 1, 32),
    "f16": GgmlType(1, 1, 1, 16),
    "q4_0": GgmlType(2, 2, 32, 4),
    "q4_1": GgmlType(3, 3, 32, 4),
    "q5_0": GgmlType(6, 8, 32, 5),
    "q5_1": GgmlType(7, 9, 32, 5),
    "q8_0": GgmlType(8, 7, 32, 8),
    "q2_k": GgmlType(10, 10, 256, 2),
    "q3_k": GgmlType(11, 11, 256, 3),
    "q4_k": GgmlType(12, 12, 256, 4),
    "q5_k": GgmlType(13, 13, 256, 5),
    "q6_k": GgmlType(14, 14, 256, 6),
}
F32, F16 = 0, 1

# transformers' names inside a layer -> OpenAI's (whisper.cpp's) names.
_LAYER_NAMES = {
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}
_NAMES = {"encoder.layer_norm": "encoder.ln_post", "decoder.layer_norm": "decoder.ln",
          "decoder.embed_tokens": "decoder.token_embedding"}
_POSITIONS = {"encoder.embed_positions.weight": "encoder.positional_embedding",
              "decoder.embed_positions.weight": "decoder.positional_embedding"}
# Kept in float32 whatever the type (as whisper.cpp's converter and quantizer do).
_FLOAT32 = {"encoder.conv1.bias", "encoder.conv2.bias"}


def ggml_name(name: str) -> str | None:
    """whisper.cpp's tensor name for a transformers parameter; None for the tied output projection."""
    if name == "proj_out.weight":
        return None  # tied to the token embedding; whisper.cpp reuses that
    parts = name.removeprefix("model.").split(".")
    if parts[1] == "layers":
        inner = ".".join(parts[3:-1])
        return ".".join([parts[0], "blocks", parts[2], _LAYER_NAMES[inner], parts[-1]])
    joined = ".".join(parts)
    if joined in _POSITIONS:
        return _POSITIONS[joined]
    stem = ".".join(parts[:-1])
    return f"{_NAMES.get(stem, stem)}.{parts[-1]}"


def unsupported_rows(config: dict[str, Any], type_name: str) -> str | None:
    """Why a model's weights cannot take `type_name` (a row length not a multiple of its block), else None."""
    block = TYPES[type_name].block
    rows = {"d_model": config["d_model"], "encoder_ffn_dim": config["encoder_ffn_dim"],
            "decoder_ffn_dim": config["decoder_ffn_dim"]}
    bad = {k: v for k, v in rows.items() if v % block}
    if not bad:
        return None
    return (f"ggml {type_name} needs weight rows divisible by {block}; this model's "
            + ", ".join(f"{k}={v}" for k, v in bad.items()) + " is not")


@cache
def ggml_library() -> ctypes.CDLL:
    """libggml-base as pywhispercpp ships it (the quantizer whisper.cpp itself links)."""
    spec = importlib.util.find_spec("_pywhispercpp")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("pywhispercpp is not installed (pip install 'quantsweep[cpu]')")
    lib = ctypes.CDLL(str(Path(spec.origin).parent / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def quantize_rows(values: np.ndarray, ggml_type: int) -> bytes:
    """A 2-D float32 array quantized row by row by ggml (rows are the last axis)."""
    lib = ggml_library()
    data = np.ascontiguousarray(values, dtype=np.float32)
    rows, per_row = data.shape
    out = ctypes.create_string_buffer(lib.ggml_row_size(ggml_type, per_row) * rows)
    written = lib.ggml_quantize_chunk(ggml_type, data.ctypes.data, out, 0, rows, per_row, None)
    return out.raw[:written]


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character -> byte table (the inverse of its bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _vocabulary(tokenizer_json: Path) -> list[bytes]:
    """The BPE vocabulary (no added tokens: whisper.cpp names the special tokens itself), as raw bytes by id."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    decode = _byte_decoder()
    return [bytes(decode[c] for c in token) for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


@dataclass
class Written:
    path: Path
    quantized_tensors: int
    quantized_params: int


def write_ggml(model: torch.nn.Module, processor: Any, model_dir: Path, type_name: str, out: Path) -> Written:
    """Write `model` (a float transformers Whisper) as a whisper.cpp file of `type_name` at `out`."""
    kind = TYPES[type_name]
    config = model.config
    reason = unsupported_rows(config.to_dict(), type_name)
    if reason:
        raise ValueError(reason)
    floating = kind.ggml_type in (F32, F16)
    ftype = kind.ftype if floating else QUANT_VERSION * 1000 + kind.ftype
    conv_type = F32 if kind.ggml_type == F32 else F16  # whisper.cpp holds conv kernels in f16 unless f32
    filters = np.asarray(processor.feature_extractor.mel_filters, dtype=np.float32).T  # (n_mels, n_freq)
    vocabulary = _vocabulary(Path(model_dir) / "tokenizer.json")
    quantized_tensors = quantized_params = 0
    with open(out, "wb") as f:
        f.write(struct.pack("<12i", MAGIC, config.vocab_size, config.max_source_positions, config.d_model,
                            config.encoder_attention_heads, config.encoder_layers, config.max_target_positions,
                            config.d_model, config.decoder_attention_heads, config.decoder_layers,
                            config.num_mel_bins, ftype))
        f.write(struct.pack("<2i", *filters.shape))
        f.write(filters.tobytes())
        f.write(struct.pack("<i", len(vocabulary)))
        for token in vocabulary:
            f.write(struct.pack("<i", len(token)) + token)
        for name, tensor in model.state_dict().items():
            target = ggml_name(name)
            if target is None:
                continue
            data = tensor.detach().to("cpu", torch.float32).numpy()
            if target in _FLOAT32:
                data = data.reshape(data.shape[0], 1)  # whisper.cpp holds conv biases as [n, 1]
            if data.ndim == 3:
                _write_tensor(f, target, data.shape, conv_type, _float(data, conv_type))
            elif data.ndim == 2 and target not in _FLOAT32 and target not in _POSITIONS.values():
                if floating:
                    _write_tensor(f, target, data.shape, kind.ggml_type, _float(data, kind.ggml_type))
                else:
                    _write_tensor(f, target, data.shape, kind.ggml_type, quantize_rows(data, kind.ggml_type))
                    quantized_tensors += 1
                    quantized_params += data.size
            else:
                _write_tensor(f, target, data.shape, F32, data.astype(np.float32).tobytes())
    return Written(out, quantized_tensors, quantized_params)


def _float(data: np.ndarray, ttype: int) -> bytes:
    return data.astype(np.float16 if ttype == F16 else np.float32).tobytes()


def _write_tensor(f: BinaryIO, name: str, shape: tuple[int, ...], ttype: int, data: bytes) -> None:
    encoded = name.encode()
    f.write(struct.pack("<3i", len(shape), len(encoded), ttype))
    f.write(struct.pack(f"<{len(shape)}i", *reversed(shape)))  # ggml lists dimensions innermost first
    f.write(encoded)
    f.write(data)
