"""Quantizer `ptq`: calibrated post-training quantization in plain PyTorch (RTN, GPTQ, AWQ, SmoothQuant,
Hadamard), simulated: weights and activations are rounded to their grids but stored and computed in float32."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from workers.device import Device
from workers.backends.base import (
    Calibrate,
    Description,
    LayerBits,
    QuantConfig,
    QuantizedModel,
    Quantizer,
    count_params,
    selected_linears,
)
from workers.backends.torch.ptq import awq
from workers.backends.torch.ptq.grid import Grid, fake_quant_tokens
from workers.backends.torch.ptq.gptq import gptq
from workers.backends.torch.ptq.observe import Inputs, blocks, decoder_prefix, observe
from workers.backends.torch.ptq.transforms import Transform, random_hadamard, smoothquant_scale
from workers.calibration import CALIBRATION_PASSES, CalibrationPlan, Calibrator

METHOD_FIELDS = {
    "damping": ("gptq", "hadamard"), "act_order": ("gptq", "hadamard"), "alpha": ("awq", "smoothquant"),
    "rounding": ("hadamard",), "clip_check": ("awq",),
}
FLOAT_BITS = 32
# Each method's grid in its reference: GPTQ's and AWQ's code quantize with a zero point per group (and so does the
# RTN baseline their papers compare with); SmoothQuant's int8 weights and QuaRot's rotated weights are symmetric.
SYMMETRIC = {"rtn": False, "gptq": False, "awq": False, "smoothquant": True, "hadamard": True}


class PtqConfig(QuantConfig):
    library: Literal["ptq"] = "ptq"
    method: Literal["rtn", "gptq", "awq", "smoothquant", "hadamard"] = Field(
        "rtn", description="rtn: round to nearest; gptq: Hessian error feedback; awq: activation-aware scales; "
        "smoothquant: activation outliers moved into the weights; hadamard: rotated inputs, then `rounding`")
    weight_bits: int = Field(4, ge=2, le=8, description="bits per weight, 2..8")
    act_bits: int | None = Field(
        None, ge=4, le=16, description="bits per activation at every quantized Linear's input (dynamic per token, "
        "simulated), 4..16; null keeps activations in float32")
    granularity: Literal["per-channel", "per-group"] = Field("per-group", description="one scale per output "
                                                             "channel, or per group of `group_size` inputs")
    group_size: int = Field(128, ge=8, description="inputs per scale with per-group granularity")
    symmetric: bool | None = Field(None, description="a zero-centred grid (scale only) or an asymmetric one (scale "
                                   "and zero point); null: the method's reference, asymmetric for rtn, gptq and awq, "
                                   "symmetric for smoothquant and hadamard")
    calibration_dataset: str = Field("synthetic-calibration", description="dataset whose audio calibrates "
                                     "gptq, awq, smoothquant and hadamard with gptq rounding (default: English "
                                     "with references; README: Calibrated PTQ, the calibration split)")
    calibration_utterances: int = Field(8, ge=1, description="calibration clips run through the float model")
    calibration_pass: Literal[CALIBRATION_PASSES] = Field(
        "teacher-forced", description="teacher-forced: every window and every position of the reference "
        "transcript at once; generate: what greedy decoding feeds the decoder, one token at a time")
    calibration_max_tokens: int | None = Field(None, ge=1, description="decoder tokens a calibration pass feeds "
                                               "at most (null: every clip's)")
    calibration_max_frames: int | None = Field(None, ge=1, description="encoder frames a calibration pass feeds "
                                               "at most, whole windows (null: every clip's)")
    damping: float = Field(0.1, gt=0, le=1, description="GPTQ: share of the mean Hessian diagonal added to it "
                           "(README: Calibrated PTQ, why 0.1 and not the language-model recipe's 0.01)")
    act_order: bool = Field(True, description="GPTQ: quantize the inputs with the largest Hessian diagonal first")
    alpha: float | None = Field(None, ge=0, le=1, description="AWQ/SmoothQuant migration strength; null: "
                                "SmoothQuant 0.5, AWQ searches 0..1 on the calibration inputs")
    rounding: Literal["rtn", "gptq"] = Field("rtn", description="hadamard: how rotated weights are rounded")
    clip_check: bool = Field(True, description="AWQ: keep the decoder's searched clipping only where it transcribes "
                             "the calibration clips no worse than the decoder rounded without it (README: Calibrated "
                             "PTQ); false: the reference's clipping as searched")

    @model_validator(mode="after")
    def _method_knobs(self) -> PtqConfig:
        for knob, methods in METHOD_FIELDS.items():
            if knob in self.model_fields_set and self.method not in methods:
                raise ValueError(f"{knob}: only for method {' or '.join(methods)}, not {self.method}")
        if "group_size" in self.model_fields_set and self.granularity == "per-channel":
            raise ValueError("group_size: only with granularity per-group")
        if self.method == "hadamard" and self.rounding == "rtn" and {"damping", "act_order"} & self.model_fields_set:
            raise ValueError("damping, act_order: only with hadamard rounding gptq")
        return self

    @property
    def grid(self) -> Grid:
        symmetric = SYMMETRIC[self.method] if self.symmetric is None else self.symmetric
        return Grid(self.weight_bits, self.group_size if self.granularity == "per-group" else None, symmetric)

    def uses_gptq(self) -> bool:
        return self.method == "gptq" or (self.method == "hadamard" and self.rounding == "gptq")

    def needs_calibration(self) -> bool:
        return self.method in ("gptq", "awq", "smoothquant") or self.uses_gptq()

    def calibration_plan(self) -> CalibrationPlan:
        return CalibrationPlan(self.calibration_pass, self.calibration_max_tokens, self.calibration_max_frames)

    def describe(self) -> Description:
        scheme = f"{self.method}-w{self.weight_bits}" + (f"a{self.act_bits}" if self.act_bits else "")
        return Description(scheme, self.weight_bits, self.act_bits, self.granularity,
                           self.grid.group_size, dynamic=True if self.act_bits else None, simulated=True)

    def label(self) -> str:
        if self.name:
            return self.name
        parts = ["ptq", self.method + ("-gptq" if self.method == "hadamard" and self.rounding == "gptq" else ""),
                 f"w{self.weight_bits}" + (f"a{self.act_bits}" if self.act_bits else ""),
                 f"g{self.group_size}" if self.granularity == "per-group" else "pc"]
        if self.grid.symmetric != SYMMETRIC[self.method]:
            parts.append("sym" if self.grid.symmetric else "asym")
        if not self.act_order and self.uses_gptq():
            parts.append("no-ao")
        if self.alpha is not None:
            parts.append(f"a{self.alpha:g}")
        if not self.clip_check and self.method == "awq":
            parts.append("no-cc")
        if self.needs_calibration():
            parts += (["gen"] if self.calibration_pass == "generate" else []) + [
                f"{n}{v}" for n, v in (("tok", self.calibration_max_tokens), ("fr", self.calibration_max_frames)) if v]
        return "-".join(parts)


class PtqQuantizer(Quantizer):
    library: ClassVar[str] = "ptq"
    config_type: ClassVar[type[QuantConfig]] = PtqConfig
    config: PtqConfig

    def supports(self, device: Device) -> str | None:
        if device.hw_class == "apple" and self.config.uses_gptq():
            return "GPTQ needs float64 Cholesky factorisations, which MPS does not have"
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        cfg = self.config
        if cfg.needs_calibration() and calibrate is None:
            raise ValueError(f"ptq {cfg.method} is calibrated: it needs a calibrate callback")
        total = count_params(model)
        layers = dict(selected_linears(model, cfg.modules))
        bits: dict[str, LayerBits] = {}
        applied: dict[str, Transform] = {}  # per layer, the transform its rounding used
        if cfg.uses_gptq() or cfg.method == "awq":
            # GPTQ's and AWQ's recipes (llmcompressor's sequential pipeline): block after block, each block's
            # statistics from inputs through the blocks already rounded, so a block corrects what came before it.
            searched: dict[str, torch.Tensor] = {}
            readers: dict[str, list[nn.Linear]] = {}  # AWQ: every layer reading a LayerNorm, whichever its block
            if cfg.method == "awq":
                for name, s in observe(model, layers, calibrate, hessian=False, samples=False).items():
                    if s.producer is not None:
                        readers.setdefault(s.producer, []).append(layers[name])
            ordered = blocks(model, layers)
            # AWQ judges its decoder's clipping on the calibration transcripts: the blocks from the decoder's first
            # on are rounded twice, with their searched bounds and without (judge_decoder_clipping).
            calibrator = calibrate if isinstance(calibrate, Calibrator) else None
            decoder_at = decoder_prefix(model)
            decoder = (decoder_at if cfg.method == "awq" and cfg.clip_check
                       and calibrator is not None and calibrator.transcribed is not None else None)
            split = next((i for i, (_, names) in enumerate(ordered) if decoder and names[0].startswith(decoder)),
                         len(ordered))

            def round_blocks(part: list[tuple[nn.Module | None, list[str]]], found: dict[str, torch.Tensor],
                             clip: bool = True) -> dict[str, Transform]:
                done: dict[str, Transform] = {}
                for block, names in part:
                    chosen = {n: layers[n] for n in names}
                    if block is None:
                        run = calibrate
                    elif calibrator and decoder_at and names[0].startswith(decoder_at):
                        # the encoder's blocks came first and are rounded; this one records only its own layers
                        run = lambda m, b=block: calibrator(m, stop_after=b, encoder_done=True)  # noqa: E731
                    else:
                        run = lambda m, b=block: calibrate(m, stop_after=b)  # noqa: E731
                    stats = observe(model, chosen, run, hessian=cfg.uses_gptq(), samples=cfg.method == "awq")
                    done |= self._round(chosen, self._transforms(chosen, stats, found, readers), stats, bits, clip)
                return done

            applied |= round_blocks(ordered[:split], searched)
            if split < len(ordered):
                rounded = [layers[n] for _, names in ordered[split:] for n in names]
                applied |= awq.judge_decoder_clipping(
                    model, rounded, lambda clip: round_blocks(ordered[split:], dict(searched), clip), calibrate)
        else:
            stats = (observe(model, layers, calibrate, hessian=False, samples=cfg.method == "awq")
                     if cfg.needs_calibration() else {})
            applied |= self._round(layers, self._transforms(layers, stats, {}, {}), stats, bits)
        if cfg.act_bits:
            for name, t in applied.items():
                layers[name].register_forward_pre_hook(_activation_rounding(t, cfg.act_bits))
        params = sum(p.numel() for layer in layers.values() for p in layer.parameters())
        return QuantizedModel(model, len(layers), params, total, layer_bits=bits)

    def _round(self, layers: dict[str, nn.Linear], transforms: dict[str, Transform], stats: dict[str, Inputs],
               bits: dict[str, LayerBits], clip: bool = True) -> dict[str, Transform]:
        """Round each layer in place (AWQ without its clipping where `clip` is false); returns each layer's
        transform."""
        cfg, grid = self.config, self.config.grid
        used = {}
        with torch.no_grad():
            for name, layer in layers.items():
                t = used[name] = transforms.get(name, Transform())
                w = t.weight_in(layer.weight.float())
                try:
                    if cfg.uses_gptq():
                        # GPTQ runs on the CPU in float64 wherever the model is: its Cholesky needs it.
                        rounded = gptq(w.cpu(), t.hessian_in(stats[name].hessian), grid, cfg.damping, cfg.act_order)
                    elif cfg.method == "awq" and clip and not name.endswith(awq.UNCLIPPED):
                        x = t.inputs_in(stats[name].sample().to(w.device))
                        rounded = grid.quantize(w, clip=awq.search_clip(w, x, grid))
                    else:
                        rounded = grid.quantize(w)
                except ValueError as exc:
                    raise ValueError(f"layer {name}: {exc}") from exc
                layer.weight.copy_(t.weight_out(rounded.to(w.device)).to(layer.weight.dtype))
                bits[name] = LayerBits(cfg.weight_bits, cfg.act_bits or FLOAT_BITS,
                                       grid.overhead_bits(layer.out_features, layer.in_features))
        return used

    def _transforms(self, layers: dict[str, nn.Linear], stats: dict[str, Inputs],
                    searched: dict[str, torch.Tensor], readers: dict[str, list[nn.Linear]]) -> dict[str, Transform]:
        """Per layer, its rotation or its input scale; `searched` keeps AWQ's scales by what they fold into,
        `readers` lists every layer reading a LayerNorm where `layers` is one block of them."""
        cfg = self.config
        if cfg.method == "hadamard":
            return {n: Transform(rotation=random_hadamard(l.in_features).to(l.weight.device)) for n, l in layers.items()}
        if cfg.method not in ("smoothquant", "awq"):
            return {}
        # Layers reading one LayerNorm's output share a scale, which a deployment folds into that LayerNorm; an
        # attention's output projection takes its own, folded into the value projection's rows (attention is
        # linear in the values). fc2 reads GELU's output, which no scale passes through: its inputs stay. A
        # LayerNorm read from several blocks (every decoder block's cross-attention keys and values read the
        # encoder's last) folds one scale: the first block to reach it searches it for all its readers (they read
        # one tensor, final by then), later blocks keep it.
        groups: dict[str, list[str]] = {}
        for name, s in stats.items():
            if s.producer is not None:
                groups.setdefault(s.producer, []).append(name)
            elif cfg.method == "awq" and name.endswith("out_proj"):
                groups[name] = [name]
        transforms = {}
        for key, names in groups.items():  # a LayerNorm, or an out_proj of its own
            first = stats[names[0]]
            if cfg.method == "smoothquant":
                scale = smoothquant_scale(first.abs_max, [layers[n].weight.float() for n in names],
                                          0.5 if cfg.alpha is None else cfg.alpha)
            elif key in searched:
                scale = searched[key]
            else:
                group = readers.get(key) or [layers[n] for n in names]
                x = first.sample().to(group[0].weight.device)
                ratios = awq.SEARCH if cfg.alpha is None else [(cfg.alpha, True)]
                scale = awq.search_scale(group, x, first.abs_mean.to(x.device), cfg.grid, cfg.act_bits, ratios)
                searched[key] = scale
            transforms.update({n: Transform(scale=scale.to(layers[n].weight.device)) for n in names})
        return transforms


def _activation_rounding(t: Transform, bits: int):
    """A forward pre-hook rounding a Linear's input to `bits` per token in the layer's transformed basis."""
    def hook(_: nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (t.inputs_out(fake_quant_tokens(t.inputs_in(x.float()), bits)).to(x.dtype),) + args[1:]
    return hook
