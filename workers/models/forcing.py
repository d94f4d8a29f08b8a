"""Model family room, teacher forcing: a family's decoder fed a whole token sequence at once (the drift metric's
log-probs along the float model's greedy ids, and calibration's passes over reference transcripts)."""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from workers.evaluate import SAMPLING_RATE, EvalConfig
from workers.models.whisper import WINDOW_S


class TeacherForcing(Protocol):
    """A family's hook: greedy ids of the float model, and any model's forward along given ids."""

    window_s: float  # seconds of audio per encoder window

    def greedy(self, model: nn.Module, processor: Any, audio: np.ndarray, config: EvalConfig,
               language: str) -> tuple[torch.Tensor, int]:
        """(decoder ids with the prompt, how many of the last ones the model generated)."""

    def log_probs(self, model: nn.Module, processor: Any, audio: np.ndarray, ids: torch.Tensor,
                  generated: int) -> torch.Tensor:
        """(generated, vocab) log-probabilities the model gives each generated position, teacher-forced."""

    def windows(self, model: nn.Module, processor: Any, audio: np.ndarray) -> list[torch.Tensor]:
        """The encoder's input for every window of the clip, one (1, ...) tensor each."""

    def prompted(self, model: nn.Module, processor: Any, text: str, language: str) -> torch.Tensor:
        """Decoder ids for `text`: the prompt generate starts from, the text's tokens, end of text."""

    def forced(self, model: nn.Module, window: torch.Tensor, ids: torch.Tensor,
               states: torch.Tensor | None = None) -> None:
        """One forward of the whole model over a window with the decoder fed `ids` at every position; with
        `states` (what `encoder_states` took in for this window), the encoder's layers before it are skipped."""

    def encoder(self, model: nn.Module) -> nn.Module:
        """The encoder: every weight its states depend on."""

    def encoder_states(self, model: nn.Module) -> nn.Module:
        """The encoder's last module: its input is the states `forced` can start from (it still runs, so its
        hooks see every pass)."""

    def positions(self, model: nn.Module) -> int:
        """Encoder positions (frames) per window."""


class WhisperForcing:
    window_s = WINDOW_S

    def greedy(self, model: nn.Module, processor: Any, audio: np.ndarray, config: EvalConfig,
               language: str) -> tuple[torch.Tensor, int]:
        from workers.models.whisper import WhisperTranscriber

        # The transcriber's own generate arguments (prompt, language, token limit), greedy.
        kwargs = WhisperTranscriber(model, processor, "cpu", config, language).generate_kwargs | {"num_beams": 1}
        steps = [0]
        hook = model.get_decoder().register_forward_pre_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
        try:
            out = model.generate(self._features(model, processor, audio), return_dict_in_generate=True, **kwargs)
        finally:
            hook.remove()
        return out.sequences[0].cpu(), steps[0]

    def log_probs(self, model: nn.Module, processor: Any, audio: np.ndarray, ids: torch.Tensor,
                  generated: int) -> torch.Tensor:
        device = model.get_encoder().conv1.weight.device
        logits = model(input_features=self._features(model, processor, audio),
                       decoder_input_ids=ids[None, :-1].to(device)).logits[0, -generated:]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def windows(self, model: nn.Module, processor: Any, audio: np.ndarray) -> list[torch.Tensor]:
        conv = model.get_encoder().conv1.weight
        window = int(self.window_s * SAMPLING_RATE)
        chunks = [audio[start:start + window] for start in range(0, max(len(audio), 1), window)]
        features = processor.feature_extractor(chunks, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        return [f[None].to(conv.device, conv.dtype) for f in features.input_features]

    def prompted(self, model: nn.Module, processor: Any, text: str, language: str) -> torch.Tensor:
        tokens = ["<|startoftranscript|>"]
        if getattr(model.generation_config, "is_multilingual", False):
            tokens += [f"<|{language}|>", "<|transcribe|>"]
        tokenizer = processor.tokenizer
        prompt = tokenizer.convert_tokens_to_ids(tokens + ["<|notimestamps|>"])
        # Whisper's transcripts start with a space: the reference is tokenized as the model writes it.
        body = tokenizer(" " + text.strip(), add_special_tokens=False).input_ids
        return torch.tensor([*prompt, *body, int(model.generation_config.eos_token_id)], dtype=torch.long)

    def forced(self, model: nn.Module, window: torch.Tensor, ids: torch.Tensor,
               states: torch.Tensor | None = None) -> None:
        if states is None:
            model(input_features=window, decoder_input_ids=ids[None].to(window.device))
        else:
            encoded = self.encoder_states(model)(states)
            model(encoder_outputs=(encoded,), decoder_input_ids=ids[None].to(window.device))

    def encoder(self, model: nn.Module) -> nn.Module:
        return model.get_encoder()

    def encoder_states(self, model: nn.Module) -> nn.Module:
        return model.get_encoder().layer_norm

    def positions(self, model: nn.Module) -> int:
        return int(model.config.max_source_positions)

    def _features(self, model: nn.Module, processor: Any, audio: np.ndarray) -> torch.Tensor:
        conv = model.get_encoder().conv1.weight
        features = processor.feature_extractor([audio], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        return features.input_features.to(conv.device, conv.dtype)


# One entry per family whose decoder can be fed a whole sequence; issue 10's families add theirs here.
TEACHER_FORCING: dict[str, TeacherForcing] = {"whisper": WhisperForcing()}
