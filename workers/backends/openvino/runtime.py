"""Backend `openvino`, runtime: the encoder and decoder graphs compiled by OpenVINO's CPU plugin in this process,
decoded by Whisper's greedy loop (workers/models/whisper_graphs.py).

openvino-genai's WhisperPipeline (2026.4) takes only optimum-intel's stateful decoder layout, and optimum-intel
does not import with transformers 5; so the pipeline's per-stage timers are this loop's (encoder call, decoder
steps), `decoder_loop` says so. Inference precision is pinned to f32, so that a CPU with bf16 or AMX units
computes what a CPU without them does (OpenVINO's default there is bf16). Features come from the model's
transformers WhisperFeatureExtractor, the torch trials' front end.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from workers.datasets import Utterance
from workers.evaluate import Evaluation, evaluate
from workers.models.whisper_graphs import GraphTranscriber
from workers.backends.base import Artifact
from workers.backends.base import OnTimed, Target

if TYPE_CHECKING:
    from workers.models import LoadedModel

DEVICE = "CPU"
DECODER_LOOP = "quantsweep greedy (whisper_graphs)"


def compiled(artifact: Artifact, threads: int) -> tuple:
    """(encoder, decoder) infer requests of the artifact's models on OpenVINO's CPU plugin."""
    import openvino as ov

    core = ov.Core()
    properties = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    return tuple(core.compile_model(artifact.path / f"{graph}.xml", DEVICE, properties).create_infer_request()
                 for graph in ("encoder", "decoder"))


def transcriber(artifact: Artifact, loaded: LoadedModel, target: Target) -> GraphTranscriber:
    encoder, decoder = compiled(artifact, target.threads)

    def encode(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = encoder.infer([features])
        return outputs[0], outputs[1]

    def step(*inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # infer() returns copies of the outputs (share_outputs=False): the request reuses its buffers on the
        # next step, whose inputs these are; reading its output tensors and copying again cost a second copy
        outputs = decoder.infer(list(inputs))
        return outputs[0], outputs[1], outputs[2]

    return GraphTranscriber(encode, step, loaded.model, loaded.processor, target.config, target.language)


class OpenVinoRuntime:
    name = "openvino"
    front_end = "transformers"  # WhisperFeatureExtractor of the model's processor
    columns = ()  # no trials columns of its own

    def transcriber(self, deployable: Artifact, loaded: LoadedModel, target: Target) -> GraphTranscriber:
        return transcriber(deployable, loaded, target)

    def evaluate(self, deployable: Artifact, loaded: LoadedModel, target: Target,
                 utterances: Sequence[Utterance], on_timed: OnTimed) -> Evaluation:
        evaluation = evaluate(self.transcriber(deployable, loaded, target), utterances, target.config, on_timed)
        evaluation.columns.update(runtime_device=DEVICE, decoder_loop=DECODER_LOOP)
        return evaluation

    def model_size_bytes(self, deployable: Artifact) -> int:
        return deployable.artifact_bytes
