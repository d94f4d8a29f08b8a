"""Dataset room, the spec's part: one dataset entry (its source, path, split, subset, columns)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SourceName = Literal["samples", "librispeech", "manifest", "folder", "hf_disk", "hf", "synthetic"]
BUILT_IN_SPLITS = ("eval", "calibration")  # the splits of the sets this project builds: samples and synthetic
SPLIT_SOURCES = ("samples", "synthetic", "hf_disk", "hf")
HF_SOURCES = ("hf_disk", "hf")
PATH_MEANING = {
    "librispeech": "a folder holding <speaker>/<chapter>/*.trans.txt and .flac files",
    "manifest": "a JSONL file with audio_filepath and text on each line",
    "folder": "a folder of audio files, each with a .txt reference beside it",
    "hf_disk": "a folder written by datasets' save_to_disk",
    "hf": "a Hugging Face hub id ORG/NAME or a local folder in the hub's layout (e.g. parquet shards)",
    "synthetic": "the folder `make synthetic-speech` built (default: the cache's synthetic-speech-espeak)",
}
# hf_disk: the first of these columns that exists names the utterances; else the row number does.
HF_ID_COLUMNS = ("utt_id", "id", "segment_id", "audio_id")



class DatasetConfig(BaseModel):
    """One dataset of a sweep spec: where its audio and references come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Label of this dataset in results and leaderboards.")
    source: SourceName = Field(
        description="Where the audio comes from: 'samples' (built-in referenced clips, no path), "
        "'librispeech' (a LibriSpeech folder tree), 'manifest' (a JSONL file with audio_filepath and "
        "text), 'folder' (audio files with a .txt reference beside each), 'hf_disk' (a Hugging Face "
        "dataset written by save_to_disk), 'hf' (datasets.load_dataset: a hub id or a folder in the hub's layout)."
    )
    # Fields added after the first results: left out of dumps while unset, so trial ids of older specs stay the same.
    preset: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="A named dataset (librispeech-test-clean, open-asr-ami, ...) whose source, path, subset, "
        "split, columns and normalizer fill every field not given here; see workers.datasets.presets.py."
    )
    path: str | None = Field(
        None, description="File or folder to read; required by every source except 'samples'."
    )
    split: str | None = Field(
        None,
        description="For 'samples': 'eval' (default, 14 English clips with references) or "
        "'calibration' (other clips, never in eval, for static quantization). For 'synthetic': 'eval' (default, "
        "600 sentences) or 'calibration' (64 other sentences, English with references). For 'hf_disk': the "
        "split of a saved DatasetDict; for 'hf' the split load_dataset reads (required). Other sources have no splits.",
    )
    subset: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="'hf' only: the dataset's configuration (load_dataset's `name`), e.g. 'clean' or 'ami'."
    )
    revision: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="'hf' only: the branch, tag or commit of the hub dataset to read (load_dataset's `revision`); "
        "rows record it (dataset_revision)."
    )
    streaming: bool = Field(
        False, exclude_if=lambda v: v is False,
        description="'hf' only: stream rows instead of downloading the split; with max_utterances the first N "
        "rows in the dataset's own order are read (deterministic, nothing else downloaded)."
    )
    language: str = Field("en", description="Language code of the speech, as told to multilingual models.")
    max_utterances: int | None = Field(
        None,
        ge=1,
        description="Use at most this many utterances: the first N by a stable hash of utt_id, "
        "a subset that is the same on every machine and spread over the whole set (streamed 'hf' sets: "
        "the first N rows in the dataset's order).",
    )
    text_column: str = Field("text", description="'hf_disk'/'hf' only: the column holding the reference transcript.")
    audio_column: str = Field(
        "audio",
        description="'hf_disk'/'hf' only: the column holding the audio (an Audio feature, a dict with "
        "'array' and 'sampling_rate', or a file path).",
    )
    normalizer: Literal["whisper-english", "basic", "none"] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Text normalisation for this dataset's WER/CER; default eval.normalizer (presets set the "
        "normaliser their leaderboard scores with)."
    )

    @model_validator(mode="before")
    @classmethod
    def fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            from workers.datasets.presets import preset_fields

            return preset_fields(data["preset"]) | {"name": data["preset"]} | data
        return data

    @model_validator(mode="after")
    def check_fields_fit_source(self) -> DatasetConfig:
        if self.source == "samples":
            if self.path is not None:
                raise ValueError("path: source 'samples' is built in and takes no path")
        elif self.source == "synthetic":
            if "synthetic" not in self.name:
                raise ValueError(f"name: {self.name!r} must say 'synthetic': source 'synthetic' is synthetic speech")
        elif self.path is None:
            raise ValueError(f"path: required for source {self.source!r} ({PATH_MEANING[self.source]})")
        if self.source in ("samples", "synthetic") and self.split not in (None, *BUILT_IN_SPLITS):
            raise ValueError(f"split: source {self.source!r} has splits 'eval' and 'calibration', not {self.split!r}")
        if self.split is not None and self.source not in SPLIT_SOURCES:
            raise ValueError(f"split: source {self.source!r} has no splits; only {', '.join(SPLIT_SOURCES)} do")
        hf_columns = sorted({"text_column", "audio_column"} & self.model_fields_set)
        if hf_columns and self.source not in HF_SOURCES:
            raise ValueError(f"{hf_columns[0]}: only sources 'hf_disk' and 'hf' have columns, not {self.source!r}")
        hub_fields = sorted({"subset", "streaming", "revision"} & self.model_fields_set)
        if hub_fields and self.source != "hf":
            raise ValueError(f"{hub_fields[0]}: only source 'hf' has it, not {self.source!r}")
        if self.source == "hf" and self.split is None:
            raise ValueError("split: required for source 'hf' (load_dataset reads one split, e.g. 'test')")
        return self


