"""Whisper's room, deployed form: the model as the two graphs a deployment runtime runs (ONNX Runtime,
OpenVINO), and the greedy loop over them that transformers' `generate` runs for the torch trials.

The encoder graph returns every decoder layer's cross-attention keys and values (computed once per clip); the
decoder graph is one step over explicit self-attention caches, so the runtimes' exporters see plain tensors
(transformers 5's Cache objects do not trace). Both graphs read the loaded model's own modules and weights.
The loop keeps generate's rules for the torch trials' settings: the same prompt, `suppress_tokens`,
`begin_suppress_tokens` at the first step, greedy argmax, end-of-text or the token limit.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.evaluate import SAMPLING_RATE, EvalConfig, StageTimes
from workers.models.whisper import WINDOW_S

# What the runtimes call: features -> (cross keys, cross values); one decoder step -> (logits, keys, values).
Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Step = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
ENCODER_INPUTS, ENCODER_OUTPUTS = ("input_features",), ("cross_keys", "cross_values")
DECODER_INPUTS = ("input_ids", "past_keys", "past_values", "cross_keys", "cross_values")
DECODER_OUTPUTS = ("logits", "present_keys", "present_values")


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, time, d_model) -> (batch, heads, time, head_dim)."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


class EncoderGraph(nn.Module):
    """Log-mel features (batch, mels, 3000) -> cross-attention keys and values, (layers, batch, heads, 1500, head_dim)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.model.encoder
        self.cross = nn.ModuleList(layer.encoder_attn for layer in model.model.decoder.layers)
        self.heads = model.config.decoder_attention_heads

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_features).last_hidden_state
        keys = torch.stack([_heads(attn.k_proj(hidden), self.heads) for attn in self.cross])
        values = torch.stack([_heads(attn.v_proj(hidden), self.heads) for attn in self.cross])
        return keys, values


class DecoderGraph(nn.Module):
    """One decoder step: new token ids (batch, n) after `past` cached positions -> the last position's logits and
    the self-attention caches grown by n, (layers, batch, heads, past + n, head_dim)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoder = model.model.decoder
        self.heads = model.config.decoder_attention_heads

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = q @ k.transpose(-1, -2)  # q carries Whisper's scaling, as in transformers' WhisperAttention
        if mask is not None:
            scores = scores + mask
        return torch.softmax(scores, dim=-1) @ v

    def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor,
                cross_keys: torch.Tensor, cross_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        past, new = past_keys.shape[3], input_ids.shape[1]
        positions = torch.arange(new, device=input_ids.device) + past
        x = self.decoder.embed_tokens(input_ids) + self.decoder.embed_positions.weight[positions]
        # new position i sees every cached position and the new ones up to itself
        seen = torch.arange(past + new, device=input_ids.device)
        mask = torch.where(seen[None, :] > positions[:, None], float("-inf"), 0.0)
        keys, values = [], []
        for i, layer in enumerate(self.decoder.layers):
            attn, h = layer.self_attn, layer.self_attn_layer_norm(x)
            k = torch.cat([past_keys[i], _heads(attn.k_proj(h), self.heads)], dim=2)
            v = torch.cat([past_values[i], _heads(attn.v_proj(h), self.heads)], dim=2)
            keys.append(k)
            values.append(v)
            x = x + attn.out_proj(_merge(self._attend(_heads(attn.q_proj(h) * attn.scaling, self.heads), k, v, mask)))
            cross, h = layer.encoder_attn, layer.encoder_attn_layer_norm(x)
            q = _heads(cross.q_proj(h) * cross.scaling, self.heads)
            x = x + cross.out_proj(_merge(self._attend(q, cross_keys[i], cross_values[i], None)))
            x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        # Whisper's output projection is its token embedding: read as the same tensor, an export keeps one copy
        logits = nn.functional.linear(self.decoder.layer_norm(x[:, -1]), self.decoder.embed_tokens.weight)
        return logits, torch.stack(keys), torch.stack(values)


@dataclass(frozen=True)
class Shapes:
    """What the graphs' example inputs and the loop's empty caches need to know of a checkpoint."""

    layers: int
    heads: int
    head_dim: int
    mels: int
    frames: int  # encoder input frames (3000 for 30 s)

    @classmethod
    def of(cls, model: nn.Module) -> Shapes:
        config = model.config
        return cls(config.decoder_layers, config.decoder_attention_heads,
                   config.d_model // config.decoder_attention_heads, config.num_mel_bins,
                   2 * config.max_source_positions)

    def example_inputs(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(encoder inputs, decoder inputs) for tracing: batch 2, 3 new tokens after 2 cached ones."""
        features = torch.zeros(2, self.mels, self.frames)
        cache = torch.zeros(self.layers, 2, self.heads, 2, self.head_dim)
        cross = torch.zeros(self.layers, 2, self.heads, self.frames // 2, self.head_dim)
        return (features,), (torch.zeros(2, 3, dtype=torch.int64), cache, cache, cross, cross)


@dataclass(frozen=True)
class Decoding:
    """generate's rules for a checkpoint and the trial's settings."""

    prompt: tuple[int, ...]
    eos: int
    suppress: tuple[int, ...]
    begin_suppress: tuple[int, ...]
    max_new_tokens: int

    @classmethod
    def of(cls, model: nn.Module, processor: Any, config: EvalConfig, language: str) -> Decoding:
        if config.num_beams != 1:
            raise ValueError(f"num_beams={config.num_beams}: this runtime's Whisper loop is greedy (num_beams 1)")
        generation = model.generation_config
        tokens = ["<|startoftranscript|>"]
        if getattr(generation, "is_multilingual", False):
            tokens += [f"<|{language}|>", "<|transcribe|>"]
        prompt = tuple(processor.tokenizer.convert_tokens_to_ids(tokens + ["<|notimestamps|>"]))
        limit = model.config.max_target_positions - len(prompt)
        return cls(prompt, int(generation.eos_token_id), tuple(generation.suppress_tokens or ()),
                   tuple(generation.begin_suppress_tokens or ()),
                   min(limit, config.max_new_tokens) if config.max_new_tokens else limit)


def greedy(encode: Encode, step: Step, features: np.ndarray, decoding: Decoding, shapes: Shapes,
           times: StageTimes) -> list[list[int]]:
    """Token ids generated for each row of `features`; encoder and decoder seconds go into `times`."""
    batch = features.shape[0]
    started = time.perf_counter()
    cross_keys, cross_values = encode(features)
    times.encode_s += time.perf_counter() - started
    times.encoder_windows += batch
    started = time.perf_counter()
    empty = np.zeros((shapes.layers, batch, shapes.heads, 0, shapes.head_dim), dtype=np.float32)
    keys, values = empty, empty
    ids = np.tile(np.asarray(decoding.prompt, dtype=np.int64), (batch, 1))
    generated: list[list[int]] = [[] for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    for position in range(decoding.max_new_tokens):
        logits, keys, values = step(ids, keys, values, cross_keys, cross_values)
        logits = np.array(logits, dtype=np.float32)
        logits[:, list(decoding.suppress)] = -np.inf
        if position == 0:
            logits[:, list(decoding.begin_suppress)] = -np.inf
        chosen = np.where(done, decoding.eos, logits.argmax(axis=-1))
        times.decoded_tokens += batch
        for row in np.flatnonzero(~done):
            if chosen[row] != decoding.eos:
                generated[row].append(int(chosen[row]))
        done |= chosen == decoding.eos
        if done.all():
            break
        ids = chosen[:, None].astype(np.int64)
    times.decode_s += time.perf_counter() - started
    return generated


class GraphTranscriber:
    """Audio -> raw text through a runtime's encoder and decoder graphs; features from transformers'
    WhisperFeatureExtractor (the torch trials' front end)."""

    solo_over_s = WINDOW_S  # a longer clip comes alone, and is refused: one 30 s window per clip

    def __init__(self, encode: Encode, step: Step, model: nn.Module, processor: Any, config: EvalConfig,
                 language: str):
        self.encode, self.step, self.processor = encode, step, processor
        self.decoding = Decoding.of(model, processor, config, language)
        self.shapes = Shapes.of(model)

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]:
        if any(len(a) > WINDOW_S * SAMPLING_RATE for a in audios):
            raise ValueError("this runtime transcribes 30 s windows; long-form audio is not supported")
        times = StageTimes()
        started = time.perf_counter()
        features = self.processor.feature_extractor(list(audios), sampling_rate=SAMPLING_RATE,
                                                    return_tensors="np").input_features.astype(np.float32)
        times.features_s = time.perf_counter() - started
        ids = greedy(self.encode, self.step, features, self.decoding, self.shapes, times)
        texts = self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts], times


def torch_graphs(model: nn.Module) -> tuple[Encode, Step]:
    """The two graphs run by torch on the float model (what calibration records, and the reference)."""
    encoder, decoder = EncoderGraph(model).eval(), DecoderGraph(model).eval()

    def encode(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            keys, values = encoder(torch.from_numpy(features))
        return keys.numpy(), values.numpy()

    def step(*inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, keys, values = decoder(*(torch.from_numpy(a) for a in inputs))
        return logits.numpy(), keys.numpy(), values.numpy()

    return encode, step


def calibration_inputs(model: nn.Module, processor: Any, audios: Sequence[np.ndarray],
                       language: str) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The encoder's and every decoder step's inputs while the float model transcribes `audios` greedily, one
    clip at a time: what static quantization calibrates its activation ranges on."""
    encode, step = torch_graphs(model)
    encoder_inputs: list[dict[str, np.ndarray]] = []
    decoder_inputs: list[dict[str, np.ndarray]] = []

    def recording_encode(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        encoder_inputs.append(dict(zip(ENCODER_INPUTS, (features,))))
        return encode(features)

    def recording_step(*inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        decoder_inputs.append(dict(zip(DECODER_INPUTS, inputs)))
        return step(*inputs)

    transcriber = GraphTranscriber(recording_encode, recording_step, model, processor, EvalConfig(), language)
    for audio in audios:
        transcriber.transcribe([audio])
    return encoder_inputs, decoder_inputs
