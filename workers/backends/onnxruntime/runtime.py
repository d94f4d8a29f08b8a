"""Backend `onnxruntime`, runtime: the encoder and decoder graphs in two ONNX Runtime sessions (CPU execution
provider) in this process, decoded by Whisper's greedy loop (workers/models/whisper_graphs.py).

Features come from the model's transformers WhisperFeatureExtractor, the torch trials' front end.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.datasets import Utterance
from workers.evaluate import Evaluation, evaluate
from workers.models.whisper_graphs import DECODER_INPUTS, ENCODER_INPUTS, GraphTranscriber
from workers.backends.base import Artifact
from workers.backends.base import OnTimed, Target

if TYPE_CHECKING:
    from workers.models import LoadedModel

PROVIDER = "CPUExecutionProvider"
DECODER_LOOP = "quantsweep greedy (whisper_graphs)"


def sessions(artifact: Artifact, threads: int) -> tuple[Any, Any]:
    """(encoder, decoder) InferenceSessions on the CPU provider with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers would fill the row's log
    return tuple(ort.InferenceSession(str(artifact.path / f"{graph}.onnx"), options, providers=[PROVIDER])
                 for graph in ("encoder", "decoder"))


def transcriber(artifact: Artifact, loaded: LoadedModel, target: Target) -> GraphTranscriber:
    encoder, decoder = sessions(artifact, target.threads)

    def encode(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys, values = encoder.run(None, dict(zip(ENCODER_INPUTS, (features,))))
        return keys, values

    def step(*inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, keys, values = decoder.run(None, dict(zip(DECODER_INPUTS, inputs)))
        return logits, keys, values

    return GraphTranscriber(encode, step, loaded.model, loaded.processor, target.config, target.language)


class OnnxRuntimeRuntime:
    name = "onnxruntime"
    front_end = "transformers"  # WhisperFeatureExtractor of the model's processor
    columns = ()  # no trials columns of its own

    def transcriber(self, deployable: Artifact, loaded: LoadedModel, target: Target) -> GraphTranscriber:
        return transcriber(deployable, loaded, target)

    def evaluate(self, deployable: Artifact, loaded: LoadedModel, target: Target,
                 utterances: Sequence[Utterance], on_timed: OnTimed) -> Evaluation:
        evaluation = evaluate(self.transcriber(deployable, loaded, target), utterances, target.config, on_timed)
        evaluation.columns.update(runtime_device=PROVIDER, decoder_loop=DECODER_LOOP)
        return evaluation

    def model_size_bytes(self, deployable: Artifact) -> int:
        return deployable.artifact_bytes
