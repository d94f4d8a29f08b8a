"""Runtime `torch`: a quantized torch module, run in this process by its family's transcriber."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from workers.datasets import Utterance
from workers.evaluate import Evaluation, Transcriber, evaluate, serialized_bytes
from workers.models.families import FAMILIES
from workers.backends.base import QuantizedModel
from workers.backends.base import OnTimed, Target

if TYPE_CHECKING:
    from workers.models import LoadedModel


class TorchRuntime:
    name = "torch"
    front_end = "transformers"  # the family's processor (WhisperFeatureExtractor for Whisper)
    columns = ()  # no trials columns of its own

    def transcriber(self, deployable: QuantizedModel, loaded: LoadedModel, target: Target) -> Transcriber:
        return FAMILIES[loaded.family].transcriber(deployable.model, loaded.processor, target.device.torch_device,
                                                   target.config, target.language)

    def evaluate(self, deployable: QuantizedModel, loaded: LoadedModel, target: Target,
                 utterances: Sequence[Utterance], on_timed: OnTimed) -> Evaluation:
        return evaluate(self.transcriber(deployable, loaded, target), utterances, target.config, on_timed)

    def model_size_bytes(self, deployable: QuantizedModel) -> int:
        return serialized_bytes(deployable.model)
