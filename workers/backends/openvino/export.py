"""Backend `openvino`, export: Whisper's two graphs converted by OpenVINO's own `convert_model` (once per
machine), then NNCF: `compress_weights` (int8/int4, sym/asym, group size, ratio) or `quantize` (static int8).

optimum-intel 2.2.0 does not import with transformers 5 (it pins transformers<5.6 and reads Qwen2-VL internals
that 5.25 no longer has), so the graphs are workers/models/whisper_graphs.py, the ones ONNX Runtime runs.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workers.backends.export_cache import cached_export, checkpoint_fingerprint
from workers.backends.openvino.config import OpenVinoConfig
from workers.device import Device
from workers.backends.base import Artifact, Calibration, Exporter, QuantConfig, count_params

if TYPE_CHECKING:
    from workers.models import LoadedModel

log = logging.getLogger(__name__)

EXPORT_VERSION = "whisper-graphs-2"  # bump when whisper_graphs or the conversion settings change
GRAPHS = ("encoder", "decoder")
LOW_BIT = ("u8", "i8", "u4", "i4")


def float_export(loaded: LoadedModel) -> tuple[Path, bool]:
    """The directory holding encoder.xml/.bin and decoder.xml/.bin (fp32 IR); whether it was cached."""
    import openvino as ov

    fingerprint = checkpoint_fingerprint(loaded.path, f"{EXPORT_VERSION}:openvino{ov.__version__}")
    return cached_export("openvino-whisper", fingerprint, lambda out: _convert(loaded, out))


def _named(model: Any, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> Any:
    for port, name in zip(model.inputs, inputs):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, outputs):
        port.get_tensor().set_names({name})
    return model


def _convert(loaded: LoadedModel, out: Path) -> None:
    import openvino as ov
    import torch

    from workers.models.whisper_graphs import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS,
                                               DecoderGraph, EncoderGraph, Shapes)

    encoder_in, decoder_in = Shapes.of(loaded.model).example_inputs()
    with torch.no_grad():
        encoder = ov.convert_model(EncoderGraph(loaded.model).eval(), example_input=encoder_in)
        decoder = ov.convert_model(DecoderGraph(loaded.model).eval(), example_input=decoder_in)
    # fp32 on disk: the compressed variants start from the float weights, and fp32 is the baseline
    ov.save_model(_named(encoder, ENCODER_INPUTS, ENCODER_OUTPUTS), out / "encoder.xml", compress_to_fp16=False)
    ov.save_model(_named(decoder, DECODER_INPUTS, DECODER_OUTPUTS), out / "decoder.xml", compress_to_fp16=False)


def compressed_weights(model: Any) -> tuple[int, int]:
    """(low-bit weight constants, their elements) of an OpenVINO model: u8/i8/u4/i4 constants that are not zero
    points (those reach a Subtract's second input)."""
    zero_points = set()
    for node in model.get_ordered_ops():
        if node.get_type_name() == "Subtract":
            source = node.input_value(1).get_node()
            if source.get_type_name() == "Convert":
                source = source.input_value(0).get_node()
            zero_points.add(source.get_friendly_name())
    tensors = params = 0
    for node in model.get_ordered_ops():
        if (node.get_type_name() == "Constant" and node.get_output_element_type(0).get_type_name() in LOW_BIT
                and node.get_friendly_name() not in zero_points):
            size = 1
            for dim in node.get_output_shape(0):
                size *= dim
            if size > 1:
                tensors, params = tensors + 1, params + size
    return tensors, params


class OpenVinoExporter(Exporter):
    library: ClassVar[str] = "openvino"
    config_type: ClassVar[type[QuantConfig]] = OpenVinoConfig
    package: ClassVar[str | None] = "openvino"
    runtime: ClassVar[str] = "openvino"
    # The graphs are Whisper's (workers/models/whisper_graphs.py); Moonshine and CTC models have no export here.
    families: ClassVar[tuple[str, ...] | None] = ("whisper",)
    config: OpenVinoConfig

    def missing(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
            return "openvino and nncf are not installed on this node (pip install 'quantsweep[openvino]')"
        return None

    def supports(self, device: Device) -> str | None:
        # Decided per class: OpenVINO's CPU plugin runs on x86 and Arm CPUs. It has no CUDA device and no
        # Apple GPU plugin (on a Mac it computes on the CPU, which the apple class does not stand for).
        if device.torch_device.startswith("cuda"):
            return "OpenVINO has no CUDA device (its plugins: CPU, Intel GPU, NPU); this backend runs its CPU plugin"
        if device.torch_device != "cpu":
            return (f"OpenVINO has no {device.torch_device} plugin (on Apple silicon it computes on the CPU only); "
                    "this backend runs its CPU plugin on CPU nodes")
        return None

    def export(self, loaded: LoadedModel, workdir: Path, calibration: Calibration | None = None) -> Artifact:
        import openvino as ov

        source, reused = float_export(loaded)
        log.info("float OpenVINO conversion %s %s", "reused from" if reused else "written to", source)
        out = workdir / "openvino"
        out.mkdir()
        core = ov.Core()
        calibrate_s = None
        inputs: tuple[list, list] | None = None
        if self.config.act_bits:
            if calibration is None:
                raise ValueError("activations int8 needs calibration audio (calibration_dataset)")
            from workers.models.whisper_graphs import calibration_inputs

            started = time.perf_counter()
            inputs = calibration_inputs(loaded.model, loaded.processor,
                                        calibration.audios[: self.config.calibration_utterances], calibration.language)
        counts = []
        for index, graph in enumerate(GRAPHS):
            model = self._compressed(core.read_model(source / f"{graph}.xml"), inputs and inputs[index])
            counts.append(compressed_weights(model))
            ov.save_model(model, out / f"{graph}.xml", compress_to_fp16=False)
        if inputs is not None:
            calibrate_s = time.perf_counter() - started
        return Artifact(self.runtime, out, {"weight_bits": self.config.weight_bits, "act_bits": self.config.act_bits},
                        sum(c[0] for c in counts), sum(c[1] for c in counts), count_params(loaded.model),
                        calibrate_s=calibrate_s)

    def _compressed(self, model: Any, calibration: list | None) -> Any:
        import nncf

        config = self.config
        if calibration is not None:
            return nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=len(calibration))
        if config.weight_bits is None:
            return model
        kind = "sym" if config.is_symmetric() else "asym"
        mode = nncf.CompressWeightsMode(f"int{config.weight_bits}_{kind}")
        if config.weight_bits == 8:
            return nncf.compress_weights(model, mode=mode)
        return nncf.compress_weights(model, mode=mode, group_size=config.group_size, ratio=config.ratio)
