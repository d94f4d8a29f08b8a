"""Model source room: CTranslate2 / faster-whisper directories converted once to transformers Whisper."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

log = logging.getLogger(__name__)

MODEL_BIN = "model.bin"
TIMESTAMP_COUNT = 1501  # <|0.00|> .. <|30.00|> in steps of 0.02 s

# CTranslate2's dtype codes. bfloat16 has no numpy type: it is widened to float32 on reading.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BFLOAT16 = 5


CONVERSION_VERSION = 2  # v2: int8/int16 weights dequantized with their scales. Bump when the conversion's output changes, so cached conversions are redone


class CorruptModelBin(ValueError):
    """A model.bin that does not parse as a CTranslate2 model (truncated, corrupt or of another kind)."""


# --- reading model.bin -------------------------------------------------------------------------------


class _ModelBinReader:
    """Cursor over the bytes of one model.bin; every short read names the file and the field."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.data = data
        self.offset = 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise CorruptModelBin(
                f"{self.path}: truncated or corrupt model.bin: needs {size} bytes for {what} at byte "
                f"{self.offset}, but the file has {len(self.data)} bytes"
            )
        view = memoryview(self.data)[self.offset : end]
        self.offset = end
        return view

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.number("H", f"length of {what}")  # counts a trailing NUL
        raw = bytes(self.take(length, what))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError as error:
            raise CorruptModelBin(f"{self.path}: corrupt model.bin: {what} is not UTF-8 ({error})") from None

    def variable(self) -> tuple[str, np.ndarray]:
        name = self.string("variable name")
        rank = self.number("B", f"rank of {name}")
        shape = tuple(self.number("I", f"shape of {name}") for _ in range(rank))
        code = self.number("B", f"dtype of {name}")
        if code not in _DTYPES:
            raise CorruptModelBin(f"{self.path}: corrupt model.bin: unknown dtype code {code} for {name}")
        nbytes = self.number("I", f"byte count of {name}")
        dtype = _DTYPES[code]
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CorruptModelBin(
                f"{self.path}: corrupt model.bin: {name} has shape {shape} of {dtype} but {nbytes} bytes"
            )
        array = np.frombuffer(self.take(nbytes, f"values of {name}"), dtype=dtype).reshape(shape)
        if code == _BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return name, array


def read_model_bin(path: Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin by name, aliases included (an alias shares its target's array)."""
    path = Path(path)
    reader = _ModelBinReader(path, path.read_bytes())
    binary_version = reader.number("I", "binary version")
    spec_name = reader.string("spec name")
    spec_revision = reader.number("I", "spec revision")
    log.debug("%s: binary version %d, %s revision %d", path, binary_version, spec_name, spec_revision)
    variables = dict(reader.variable() for _ in range(reader.number("I", "number of variables")))
    for _ in range(reader.number("I", "number of aliases")):
        alias, target = reader.string("alias name"), reader.string("alias target")
        if target not in variables:
            raise CorruptModelBin(f"{path}: corrupt model.bin: alias {alias} points at missing {target}")
        variables[alias] = variables[target]
    if reader.offset != len(reader.data):
        raise CorruptModelBin(
            f"{path}: corrupt model.bin: {len(reader.data) - reader.offset} unexpected bytes after the aliases"
        )
    return variables


def dequantize(weights: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """Quantized (int8/int16) weights as float32: CTranslate2 stores round(w * scale) beside `<name>_scale`
    (one scale per output row for int8, one per tensor for int16), so w = q / scale. Aliases follow their target."""
    restored: dict[int, np.ndarray] = {}
    for name, array in weights.items():
        scale = weights.get(f"{name}_scale")
        if array.dtype.kind in "iu" and scale is not None and id(array) not in restored:
            factor = scale.astype(np.float32).reshape(scale.shape + (1,) * (array.ndim - scale.ndim))
            restored[id(array)] = array.astype(np.float32) / factor
    out = {name: restored.get(id(array), array) for name, array in weights.items() if not name.endswith("_scale")}
    unscaled = [n for n, a in out.items() if a.dtype.kind in "iu" and a.ndim >= 2]
    if unscaled:
        raise ValueError(f"{path}: integer weights without a `_scale` to dequantize them: {', '.join(unscaled[:5])}")
    return out


def join_parts(parts: list[Path], out: Path) -> Path:
    """Concatenate a model.bin split in parts (in the given order) into out, written atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as joined:
        try:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, joined, length=16 << 20)
            joined.flush()
            os.fsync(joined.fileno())
        except BaseException:
            Path(joined.name).unlink(missing_ok=True)
            raise
    os.chmod(joined.name, 0o644)  # NamedTemporaryFile is private; a joined model.bin is shared
    os.replace(joined.name, out)
    return out


# --- shapes -> transformers' WhisperConfig ----------------------------------------------------------------


@dataclass(frozen=True)
class WhisperDims:
    """The architecture of a Whisper checkpoint, as its weight shapes tell it."""

    d_model: int
    num_mel_bins: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    vocab_size: int
    max_source_positions: int
    max_target_positions: int

    @property
    def is_multilingual(self) -> bool:
        # 51864 English-only; 51865 multilingual (51866 for large-v3, which adds <|yue|>).
        return self.vocab_size >= 51865

    @property
    def end_of_text_id(self) -> int:
        return 50257 if self.is_multilingual else 50256


def _layer_count(weights: dict[str, np.ndarray], stack: str) -> int:
    indices = {int(m.group(1)) for name in weights if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    return max(indices) + 1 if indices else 0


def whisper_dims(weights: dict[str, np.ndarray]) -> WhisperDims:
    """Read the architecture off a CTranslate2 WhisperSpec's variables."""
    d_model, num_mel_bins, _kernel = weights["encoder/conv1/weight"].shape
    return WhisperDims(
        d_model=int(d_model),
        num_mel_bins=int(num_mel_bins),
        encoder_layers=_layer_count(weights, "encoder"),
        decoder_layers=_layer_count(weights, "decoder"),
        encoder_attention_heads=int(weights["encoder/num_heads"]),
        decoder_attention_heads=int(weights["decoder/num_heads"]),
        encoder_ffn_dim=int(weights["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(weights["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        vocab_size=int(weights["decoder/embeddings/weight"].shape[0]),
        max_source_positions=int(weights["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(weights["decoder/position_encodings/encodings"].shape[0]),
    )


def whisper_config(dims: WhisperDims) -> WhisperConfig:
    """transformers' WhisperConfig for these dimensions (generation settings live in the generation config)."""
    from transformers import WhisperConfig

    end_of_text = dims.end_of_text_id
    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_attention_heads,
        decoder_attention_heads=dims.decoder_attention_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
        pad_token_id=end_of_text,
        decoder_start_token_id=end_of_text + 1,
        # Generation settings belong to (and are saved in) the generation config, not the model's.
        suppress_tokens=None,
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )


# --- CTranslate2 names -> transformers names --------------------------------------------------------------


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    # Always a copy: the arrays are read-only views of model.bin's bytes, and these become the parameters.
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))


class _StateDictBuilder:
    """Collects transformers' state dict from CTranslate2's variables, splitting fused projections."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.state: dict[str, torch.Tensor] = {}

    def copy(self, target: str, source: str) -> None:
        self.state[target] = _as_tensor(self.weights[source])

    def linear(self, target: str, source: str) -> None:
        self.copy(f"{target}.weight", f"{source}/weight")
        self.copy(f"{target}.bias", f"{source}/bias")

    def layer_norm(self, target: str, source: str) -> None:
        self.copy(f"{target}.weight", f"{source}/gamma")
        self.copy(f"{target}.bias", f"{source}/beta")

    def fused_linear(self, targets: list[str], source: str) -> None:
        """Split a projection fused on dim 0; the k projection carries no bias in transformers."""
        weights = np.split(self.weights[f"{source}/weight"], len(targets))
        biases = np.split(self.weights[f"{source}/bias"], len(targets))
        for target, weight, bias in zip(targets, weights, biases):
            self.state[f"{target}.weight"] = _as_tensor(weight)
            if target.endswith("k_proj"):
                # CTranslate2 stores zeros here; anything else would be a bias transformers cannot hold.
                if np.any(bias.astype(np.float32) != 0):
                    raise ValueError(f"{source}/bias: the key projection's bias is not zero")
                continue
            self.state[f"{target}.bias"] = _as_tensor(bias)


def _add_attention_block(build: _StateDictBuilder, target: str, source: str) -> None:
    build.fused_linear([f"{target}.self_attn.{p}_proj" for p in "qkv"], f"{source}/self_attention/linear_0")
    build.linear(f"{target}.self_attn.out_proj", f"{source}/self_attention/linear_1")
    build.layer_norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
    build.linear(f"{target}.fc1", f"{source}/ffn/linear_0")
    build.linear(f"{target}.fc2", f"{source}/ffn/linear_1")
    build.layer_norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")


def transformers_state_dict(weights: dict[str, np.ndarray], dims: WhisperDims) -> dict[str, torch.Tensor]:
    """WhisperForConditionalGeneration's state dict (float32) from a CTranslate2 WhisperSpec's variables."""
    build = _StateDictBuilder(weights)
    build.linear("model.encoder.conv1", "encoder/conv1")
    build.linear("model.encoder.conv2", "encoder/conv2")
    build.copy("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    build.layer_norm("model.encoder.layer_norm", "encoder/layer_norm")
    for i in range(dims.encoder_layers):
        _add_attention_block(build, f"model.encoder.layers.{i}", f"encoder/layer_{i}")

    build.copy("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    build.copy("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    build.layer_norm("model.decoder.layer_norm", "decoder/layer_norm")
    for i in range(dims.decoder_layers):
        target, source = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        _add_attention_block(build, target, source)
        build.linear(f"{target}.encoder_attn.q_proj", f"{source}/attention/linear_0")
        build.fused_linear([f"{target}.encoder_attn.{p}_proj" for p in "kv"], f"{source}/attention/linear_1")
        build.linear(f"{target}.encoder_attn.out_proj", f"{source}/attention/linear_2")
        build.layer_norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
    # CTranslate2 aliases decoder/projection to the embeddings: the same tie transformers makes.
    build.state["proj_out.weight"] = build.state["model.decoder.embed_tokens.weight"]
    return build.state


def build_model(weights: dict[str, np.ndarray]) -> WhisperForConditionalGeneration:
    """A float32 WhisperForConditionalGeneration holding exactly the CTranslate2 weights."""
    from transformers import WhisperForConditionalGeneration

    dims = whisper_dims(weights)
    # Built on the meta device: random initialisation of weights about to be replaced costs seconds.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(whisper_config(dims))
    result = model.load_state_dict(transformers_state_dict(weights, dims), strict=False, assign=True)
    unfilled = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if result.missing_keys or result.unexpected_keys or unfilled:
        raise ValueError(
            "CTranslate2 -> transformers Whisper mapping is incomplete: parameters not filled: "
            f"{sorted(set(result.missing_keys) | set(unfilled))}; names with no parameter: {result.unexpected_keys}"
        )
    model.tie_weights()  # assign=True made proj_out its own Parameter; make it the embeddings' again
    if model.proj_out.weight is not model.model.decoder.embed_tokens.weight:
        raise ValueError("proj_out is not tied to the decoder's token embeddings after loading")
    return model.eval()


# --- tokenizer, generation config, feature extractor ------------------------------------------------------


def _added_tokens(tokenizer_json: Path) -> dict[str, int]:
    """The added (special) tokens of a Hugging Face tokenizer.json, content -> id."""
    added = json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    return {token["content"]: token["id"] for token in added}


def build_tokenizer(tokenizer_json: Path, dims: WhisperDims) -> WhisperTokenizerFast:
    """WhisperTokenizerFast from the package's tokenizer.json, special tokens declared as the hub's are.

    The packages' tokenizer.json lack the timestamp tokens and name no special tokens beyond end-of-text;
    both are added so that len(tokenizer) == vocab size and decode(skip_special_tokens=True) drops them all.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    special = list(_added_tokens(tokenizer_json))
    end_of_text = "<|endoftext|>"
    with tempfile.TemporaryDirectory() as staging:
        shutil.copy(tokenizer_json, Path(staging) / "tokenizer.json")
        tokenizer = WhisperTokenizerFast.from_pretrained(
            staging,
            bos_token=end_of_text,
            eos_token=end_of_text,
            unk_token=end_of_text,
            pad_token=end_of_text,
            additional_special_tokens=special,
            model_max_length=dims.max_target_positions,
            local_files_only=True,
        )
    timestamps = [
        AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
        for i in range(TIMESTAMP_COUNT)
    ]
    if len(tokenizer) + len(timestamps) == dims.vocab_size:
        tokenizer.add_tokens(timestamps)
    else:
        log.warning(
            "%s: %d tokens + %d timestamps != vocab size %d; timestamp tokens not added",
            tokenizer_json, len(tokenizer), len(timestamps), dims.vocab_size,
        )
    return tokenizer


def build_generation_config(
    model_config: WhisperConfig, ct2_config: dict, added_tokens: dict[str, int], dims: WhisperDims
) -> GenerationConfig:
    """Whisper's generation config: prompt tokens, suppression lists, languages and tasks."""
    from transformers import GenerationConfig

    generation = GenerationConfig(
        decoder_start_token_id=model_config.decoder_start_token_id,
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        pad_token_id=model_config.pad_token_id,
        no_timestamps_token_id=added_tokens["<|notimestamps|>"],
        prev_sot_token_id=added_tokens.get("<|startofprev|>"),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        max_initial_timestamp_index=50,
        max_length=dims.max_target_positions,
        is_multilingual=dims.is_multilingual,
    )
    if dims.is_multilingual:
        language_ids = set(ct2_config.get("lang_ids", []))
        generation.lang_to_id = {token: i for token, i in added_tokens.items() if i in language_ids}
        generation.task_to_id = {task: added_tokens[f"<|{task}|>"] for task in ("translate", "transcribe")}
    return generation


# --- conversion -------------------------------------------------------------------------------------------


def _write_transformers_dir(ct2_dir: Path, target: Path) -> None:
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    weights = dequantize(read_model_bin(ct2_dir / MODEL_BIN), ct2_dir / MODEL_BIN)
    model = build_model(weights)
    dims = whisper_dims(weights)
    del weights  # the float16 arrays are no longer needed once copied into float32 parameters

    model.generation_config = build_generation_config(
        model.config, ct2_config, _added_tokens(ct2_dir / "tokenizer.json"), dims
    )
    model.save_pretrained(target)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=dims.num_mel_bins),
        tokenizer=build_tokenizer(ct2_dir / "tokenizer.json", dims),
    )
    processor.save_pretrained(target)


def convert_ctranslate2(ct2_dir: Path, out_dir: Path) -> Path:
    """Convert a CTranslate2 Whisper directory into a complete transformers directory at out_dir.

    Written into a temporary sibling and renamed into place, so out_dir is either whole or absent.
    Raises FileExistsError if out_dir already exists.
    """
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; not overwriting a converted model")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        log.info("converting CTranslate2 Whisper %s -> %s", ct2_dir, out_dir)
        _write_transformers_dir(ct2_dir, staging)
        staging.chmod(0o755)  # mkdtemp made it private; the cache is read by every worker on the node
        os.rename(staging, out_dir)  # fails if another process finished first: theirs stands
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def content_sample(path: Path, digest: Any, window: int = 1 << 20) -> None:
    """Feed a file's size and its first and last MiB to `digest`: stable across reinstalls (unlike mtimes),
    and cheap on a model of hundreds of MB."""
    size = os.stat(path).st_size
    digest.update(f"{size}:".encode())
    with open(path, "rb") as f:
        digest.update(f.read(window))
        f.seek(max(size - window, 0))
        digest.update(f.read(window))


def ct2_fingerprint(ct2_dir: Path) -> str:
    """Short hash of what makes a conversion stale: model.bin's content, config.json, this converter's version."""
    digest = hashlib.sha256(f"conversion-{CONVERSION_VERSION}:".encode())
    content_sample(Path(ct2_dir) / MODEL_BIN, digest)
    digest.update((Path(ct2_dir) / "config.json").read_bytes())
    return digest.hexdigest()[:12]


def cached_conversion(ct2_dir: Path, cache_root: Path, name: str | None = None) -> Path:
    """The transformers directory converted from ct2_dir, converting only on the first call.

    It lives at cache_root / "<name>-<fingerprint>"; name defaults to the CTranslate2 directory's name.
    """
    ct2_dir = Path(ct2_dir)
    out_dir = Path(cache_root) / f"{name or ct2_dir.name}-{ct2_fingerprint(ct2_dir)}"
    if out_dir.is_dir():
        log.debug("reusing converted model %s", out_dir)
        return out_dir
    try:
        return convert_ctranslate2(ct2_dir, out_dir)
    except OSError:
        # Another worker on this node may have renamed its conversion into place first.
        if out_dir.is_dir():
            return out_dir
        raise
