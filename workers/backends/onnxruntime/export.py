"""Backend `onnxruntime`, export: Whisper's two graphs to ONNX (once per machine), then ONNX Runtime's own
quantization tools: quantize_dynamic, quantize_static (QDQ, calibrated) or MatMulNBitsQuantizer.

The export is torch's TorchScript ONNX exporter over workers/models/whisper_graphs.py: optimum-onnx 0.1.0 does
not import with transformers 5 (it pins transformers<4.58), and ONNX Runtime's own Whisper exporter
(onnxruntime.transformers.models.whisper.convert_to_onnx) hands the decoder tuple caches that transformers 5 no
longer takes. torch's dynamo exporter wrote a decoder that transcribed garbage here; the TorchScript one matched
the float model token for token.

Every scheme quantizes the MatMuls that read a weight. The token embedding, which is also Whisper's output
projection (one tensor read by Gather and Gemm, so the files hold it once), stays float32, as the torch
libraries leave `proj_out` by default: it is over half of tiny.en's parameters, so the sizes say so.
"""
from __future__ import annotations

import logging
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from workers.backends.export_cache import cached_export, checkpoint_fingerprint
from workers.backends.onnxruntime.config import OnnxRuntimeConfig
from workers.device import Device
from workers.backends.base import Artifact, Calibration, Exporter, QuantConfig, count_params

if TYPE_CHECKING:
    from workers.models import LoadedModel

log = logging.getLogger(__name__)

EXPORT_VERSION = "whisper-graphs-3"  # bump when whisper_graphs or the export settings change
GRAPHS = ("encoder", "decoder")
OPSET = 17
# ISA flags with int8 dot products that do not saturate u8s8 (ONNX Runtime's quantization docs: reduce_range
# is for x86 AVX2/AVX512 without VNNI)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def float_export(loaded: LoadedModel) -> tuple[Path, bool]:
    """The directory holding encoder.onnx and decoder.onnx (fp32) of the loaded checkpoint; whether it was cached."""
    import torch

    fingerprint = checkpoint_fingerprint(loaded.path, f"{EXPORT_VERSION}:opset{OPSET}:torch{torch.__version__}")
    return cached_export("onnx-whisper", fingerprint, lambda out: _export(loaded, out))


def _export(loaded: LoadedModel, out: Path) -> None:
    import torch

    from workers.models.whisper_graphs import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS,
                                               DecoderGraph, EncoderGraph, Shapes)

    encoder_in, decoder_in = Shapes.of(loaded.model).example_inputs()
    batch, cache = {1: "batch"}, {1: "batch", 3: "past"}
    with torch.no_grad():
        torch.onnx.export(EncoderGraph(loaded.model).eval(), encoder_in, str(out / "encoder.onnx"),
                          input_names=list(ENCODER_INPUTS), output_names=list(ENCODER_OUTPUTS),
                          dynamic_axes={"input_features": {0: "batch"}, "cross_keys": batch, "cross_values": batch},
                          opset_version=OPSET, dynamo=False)
        torch.onnx.export(DecoderGraph(loaded.model).eval(), decoder_in, str(out / "decoder.onnx"),
                          input_names=list(DECODER_INPUTS), output_names=list(DECODER_OUTPUTS),
                          dynamic_axes={"input_ids": {0: "batch", 1: "new"}, "past_keys": cache, "past_values": cache,
                                        "cross_keys": batch, "cross_values": batch, "logits": {0: "batch"},
                                        "present_keys": {1: "batch", 3: "total"},
                                        "present_values": {1: "batch", 3: "total"}},
                          opset_version=OPSET, dynamo=False)
    tie_output_projection(out / "decoder.onnx")


def tie_output_projection(path: Path) -> None:
    """Whisper's output projection as Gemm(hidden, embedding, transB=1) over the token embedding itself.

    The TorchScript exporter folds the embedding's transpose into a second initializer (80 MB of tiny.en's
    fp32 decoder, twice) read by a MatMul, which ONNX Runtime's quantizers would then quantize; the Gemm reads
    the one tensor the Gather reads, and the quantizers (MatMul only) leave it float, as the torch libraries
    leave `proj_out`."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    embedding = next(n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[0] in initializers)
    table = numpy_helper.to_array(initializers[embedding])
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            continue
        weight = initializers[node.input[1]]
        if tuple(weight.dims) == table.shape[::-1] and np.array_equal(numpy_helper.to_array(weight), table.T):
            graph.node.remove(node)
            graph.node.insert(index, helper.make_node("Gemm", [node.input[0], embedding], list(node.output),
                                                      name="/proj_out/Gemm", transB=1))
            graph.initializer.remove(weight)
            break
    else:
        raise ValueError(f"{path}: no MatMul over the transposed token embedding (the output projection)")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def default_reduce_range(isa_flags: tuple[str, ...]) -> bool:
    """7-bit weights on x86 CPUs without VNNI (u8s8 saturates there), full range elsewhere."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
    return x86 and not any(flag in isa_flags for flag in VNNI_FLAGS)


class _Reader:
    """ONNX Runtime's CalibrationDataReader over recorded graph inputs."""

    def __init__(self, inputs: list[dict[str, np.ndarray]]):
        self._inputs: Iterator[dict[str, np.ndarray]] = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


def weight_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes whose second input is a weight (an initializer)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in initializers]


def quantized_weights(path: Path) -> tuple[int, int]:
    """(quantized weight tensors, their parameters) of a quantized ONNX file: MatMulNBits weights (K x N) and the
    8-bit initializers that quantized ops read as weights (not scales or zero points)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {i.name: i for i in model.graph.initializer}
    weight_input = {"MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "ConvInteger": 1, "DequantizeLinear": 0,
                    "QLinearMatMul": 3, "QLinearConv": 3}
    tensors = params = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            tensors, params = tensors + 1, params + attrs["K"] * attrs["N"]
        elif node.op_type in weight_input and len(node.input) > weight_input[node.op_type]:
            source = initializers.get(node.input[weight_input[node.op_type]])
            if source is not None and source.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
                size = numpy_helper.to_array(source).size
                if size > 1:  # per-tensor zero points feed DequantizeLinear too, as scalars
                    tensors, params = tensors + 1, params + size
    return tensors, params


class OnnxRuntimeExporter(Exporter):
    library: ClassVar[str] = "onnxruntime"
    config_type: ClassVar[type[QuantConfig]] = OnnxRuntimeConfig
    package: ClassVar[str | None] = "onnxruntime"
    runtime: ClassVar[str] = "onnxruntime"
    # The graphs are Whisper's (workers/models/whisper_graphs.py); Moonshine and CTC models have no export here.
    families: ClassVar[tuple[str, ...] | None] = ("whisper",)
    config: OnnxRuntimeConfig

    def missing(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
            return "onnxruntime is not installed on this node (pip install 'quantsweep[onnxruntime]')"
        return None

    def supports(self, device: Device) -> str | None:
        # Decided per class: x86 and Arm CPUs run the CPU execution provider. CUDA's provider is another wheel
        # (onnxruntime-gpu) and would need the caches bound on the GPU (IO binding) to time the GPU; an Apple
        # node's class stands for its GPU, which ONNX Runtime reaches only through CoreML, whose provider takes
        # static shapes and would hand these growing-cache graphs back to the CPU.
        if device.torch_device.startswith("cuda"):
            return ("onnxruntime here runs the CPU execution provider; CUDA's is in the onnxruntime-gpu wheel, "
                    "which this backend does not install or drive")
        if device.torch_device != "cpu":
            return (f"onnxruntime has no {device.torch_device} execution provider (CoreML's takes static shapes, "
                    "not these graphs' growing caches); this backend runs the CPU execution provider")
        return None

    def export(self, loaded: LoadedModel, workdir: Path, calibration: Calibration | None = None) -> Artifact:
        import time

        from workers.hardware import probe

        source, reused = float_export(loaded)
        log.info("float ONNX export %s %s", "reused from" if reused else "written to", source)
        out = workdir / "onnxruntime"
        out.mkdir()
        config, settings = self.config, {"format": self.config.format}
        calibrate_s = None
        if config.format == "fp32":
            for graph in GRAPHS:
                shutil.copyfile(source / f"{graph}.onnx", out / f"{graph}.onnx")
        elif config.format == "weight-only":
            self._weight_only(source, out)
        else:
            reduce_range = (config.reduce_range if config.reduce_range is not None
                            else default_reduce_range(probe().isa_flags))
            settings["reduce_range"] = reduce_range
            log.info("reduce_range=%s (%s)", reduce_range, "spec" if config.reduce_range is not None else "CPU's ISA")
            if config.format == "dynamic-int8":
                self._dynamic(source, out, reduce_range)
            else:
                if calibration is None:
                    raise ValueError("static-int8 needs calibration audio (calibration_dataset)")
                started = time.perf_counter()
                self._static(loaded, source, out, reduce_range, calibration)
                calibrate_s = time.perf_counter() - started
        counts = [quantized_weights(out / f"{graph}.onnx") for graph in GRAPHS]
        return Artifact(self.runtime, out, settings, sum(c[0] for c in counts), sum(c[1] for c in counts),
                        count_params(loaded.model), calibrate_s=calibrate_s)

    def _dynamic(self, source: Path, out: Path, reduce_range: bool) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for graph in GRAPHS:
            # MatMul only: the encoder's Conv would become ConvInteger, which ONNX Runtime's CPU provider runs
            # for uint8 weights only
            quantize_dynamic(source / f"{graph}.onnx", out / f"{graph}.onnx", op_types_to_quantize=["MatMul"],
                             per_channel=self.config.per_channel, reduce_range=reduce_range,
                             weight_type=QuantType.QInt8)

    def _static(self, loaded: LoadedModel, source: Path, out: Path, reduce_range: bool,
                calibration: Calibration) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from workers.models.whisper_graphs import calibration_inputs

        inputs = calibration_inputs(loaded.model, loaded.processor,
                                    calibration.audios[: self.config.calibration_utterances], calibration.language)
        for graph, recorded in zip(GRAPHS, inputs):
            # the MatMuls with weights; attention's activation x activation products stay float (quantized too,
            # tiny.en looped on a phrase after calibrating on a few clips)
            quantize_static(source / f"{graph}.onnx", out / f"{graph}.onnx", _Reader(recorded),
                            quant_format=QuantFormat.QDQ, nodes_to_quantize=weight_matmuls(source / f"{graph}.onnx"),
                            per_channel=self.config.per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)

    def _weight_only(self, source: Path, out: Path) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                     MatMulNBitsQuantizer)

        config = self.config
        for graph in GRAPHS:
            algorithm = DefaultWeightOnlyQuantConfig(block_size=config.group_size, is_symmetric=config.symmetric,
                                                     accuracy_level=config.accuracy_level, bits=config.weight_bits)
            quantizer = MatMulNBitsQuantizer(onnx.load(str(source / f"{graph}.onnx")), bits=config.weight_bits,
                                             block_size=config.group_size, is_symmetric=config.symmetric,
                                             accuracy_level=config.accuracy_level, algo_config=algorithm)
            quantizer.process()
            quantizer.model.save_model_to_file(str(out / f"{graph}.onnx"), use_external_data_format=False)
