"""The results contract: Arrow schemas of the `trials` and `utterances` tables and their version."""
from __future__ import annotations

import pyarrow as pa

# Version 2 added `latency_cv`. Version 3 added, for issue 7, `model_mem_bytes`, `setup_id`, `eval_config`,
# `host_group` and `quantsweep_version` (and gave `peak_mem_bytes` its isolated meaning, see peak_mem_kind);
# for issue 8 the runtime columns: `runtime`, `front_end`, `artifact_bytes`, `runtime_*_s` of trials, and
# `hypothesis_normalized` of utterances; for issue 9 the simulated-quantization flag, the analytic size,
# BOPs, memory I/O, the decoded token and window counts, and the KL/top-1 drift from the float model. Readers take every older version: columns a file lacks read as
# null (DuckDB union_by_name, pyarrow dataset schemas), so a v1 row is a v2 row without latency spread.
# Version 4 (issue 13): the phase seconds and the NULL reasons of the measurements beside the floor; CPU
# peak memory read inline around the timed passes by default (peak_mem_kind says which method).
# Version 5 (issue 14): adaptive races: statuses `racing` and `stopped`, the race_* columns and grid_estimate_s
# of trials, the `rung` of utterances.
SCHEMA_VERSION = 5

# Trial statuses: `ok` measured; `failed` raised (error holds type, message, traceback tail);
# `unsupported` the library cannot run the scheme on the device (error holds the reason);
# `no_capacity` no live node of the targeted class within the wait; (issue 14, strategy adaptive) `racing` a
# trial of an unfinished race, scored on its first rungs (a later run continues it); `stopped` the race stopped
# it: another trial of its group was better with confidence (race_dominated_by, race_reason), and its numbers
# are over the race_rung rungs (n_utterances utterances) it was scored on.
STATUSES = ("ok", "failed", "unsupported", "no_capacity", "racing", "stopped")

TRIALS = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("error_type", pa.string()),
        ("run_id", pa.string()),  # one execution of the trial; utterance rows carry the same run_id
        ("config", pa.string()),  # canonical JSON of the trial's config: what the id hashes
        # v3: hash of the config without its eval settings: a re-run with other eval settings is the same setup
        ("setup_id", pa.string()),
        ("eval_config", pa.string()),  # v3: canonical JSON of the eval settings (baselines match on it)
        # what was run
        ("model", pa.string()),
        ("model_source", pa.string()),
        ("family", pa.string()),
        ("quantization", pa.string()),  # the quantization's label, e.g. "hqq-w4-g64"
        ("library", pa.string()),
        ("scheme", pa.string()),
        ("weight_bits", pa.int32()),
        ("act_bits", pa.int32()),
        ("granularity", pa.string()),
        ("group_size", pa.int32()),
        ("dynamic", pa.bool_()),
        ("compute_dtype", pa.string()),
        ("quantized_modules", pa.int32()),
        ("quantized_params", pa.int64()),
        ("total_params", pa.int64()),
        ("quantized_param_share", pa.float64()),
        ("calibration_dataset", pa.string()),
        ("calibration_utterances", pa.int32()),
        ("dataset", pa.string()),
        ("language", pa.string()),
        ("normalizer", pa.string()),
        # accuracy
        ("n_utterances", pa.int32()),
        ("n_utterance_errors", pa.int32()),
        ("audio_seconds", pa.float64()),
        ("ref_words", pa.int64()),
        ("word_errors", pa.int64()),
        ("wer", pa.float64()),
        ("cer", pa.float64()),
        # speed (seconds; rtf = compute seconds / audio seconds)
        ("rtf", pa.float64()),
        ("rtf_best", pa.float64()),
        ("rtf_cv", pa.float64()),
        ("rtfx", pa.float64()),
        ("latency_p50_s", pa.float64()),
        ("latency_p90_s", pa.float64()),
        ("latency_best_s", pa.float64()),
        ("latency_cv", pa.float64()),  # v2: CV over timing repeats of the pass's median utterance latency
        ("features_s", pa.float64()),
        ("encode_s", pa.float64()),
        ("decode_s", pa.float64()),
        ("load_s", pa.float64()),
        ("model_reused", pa.bool_()),  # the worker had the model in memory already (load_s is its first load)
        ("quantize_s", pa.float64()),
        ("quantized_reused", pa.bool_()),  # the worker reused this quantization from a trial on another dataset
        ("calibrate_s", pa.float64()),
        ("eval_s", pa.float64()),
        ("compute_s", pa.float64()),
        ("timing_repeats", pa.int32()),
        ("warmup_utterances", pa.int32()),
        ("batch_size", pa.int32()),
        ("num_beams", pa.int32()),
        ("threads", pa.int32()),
        ("cores", pa.string()),
        # no other timed trial could share the trial's cores or GPU (pinned cores no other runner holds, or
        # one GPU of its own through Ray); false for nodes sharing cores, e.g. `cluster local`
        ("timing_exclusive", pa.bool_()),
        ("batch_changed_transcripts", pa.int32()),  # utterances whose text at batch_size differs from batch 1
        # size and memory (bytes)
        ("model_size_bytes", pa.int64()),
        ("baseline_size_bytes", pa.int64()),
        ("size_reduction", pa.float64()),
        # bytes inference with this model needed above what the process held before the model existed;
        # peak_mem_kind says how: rss_hwm_delta_isolated (CPU, a fresh child process), cuda_max_allocated_delta,
        # mps_sampled_allocated_delta (README: "What is measured")
        ("peak_mem_bytes", pa.int64()),
        ("peak_mem_kind", pa.string()),
        ("model_mem_bytes", pa.int64()),  # v3: bytes of the quantized model's tensors as resident
        # where it ran
        ("hw_class", pa.string()),
        ("hw_chip", pa.string()),
        ("hw_simulated", pa.bool_()),
        ("isa_flags", pa.string()),
        ("device", pa.string()),
        ("host", pa.string()),
        ("host_group", pa.string()),  # v3: machines interchangeable for timing (node label, else the host)
        ("node_id", pa.string()),
        ("versions", pa.string()),  # JSON {package: version or "missing"}
        ("quantsweep_version", pa.string()),  # v3
        ("attempt", pa.int32()),
        ("log", pa.string()),  # warnings and library log lines caught during the trial
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("timed_started_at", pa.timestamp("us", tz="UTC")),
        ("timed_finished_at", pa.timestamp("us", tz="UTC")),
        # (issue 8) the runtime that ran the deployable, and what it reports of itself
        ("runtime", pa.string()),  # torch, ctranslate2, whispercpp
        ("front_end", pa.string()),  # what computed the log-mel features: transformers, whisper.cpp
        ("artifact_bytes", pa.int64()),  # bytes of the deployed files on disk (NULL for torch modules)
        # seconds by whisper.cpp's own timers over the first timed pass (load: the model's, once)
        ("runtime_load_s", pa.float64()),
        ("runtime_mel_s", pa.float64()),
        ("runtime_sample_s", pa.float64()),
        ("runtime_encode_s", pa.float64()),
        ("runtime_decode_s", pa.float64()),
        ("runtime_batchd_s", pa.float64()),
        ("runtime_prompt_s", pa.float64()),
        # (issue 9) simulated quantization, analytic costs (README "Analytic costs"), drift from the float model
        ("simulated", pa.bool_()),  # values rounded to the grid but stored and computed in float32 (ptq)
        ("analytic_size_bytes", pa.int64()),  # analytic packed size: bits × params + scales/zeros
        ("encoder_windows", pa.int64()),  # encoder windows run in the batch-1 pass
        ("decoded_tokens", pa.int64()),  # decoder steps run in the batch-1 pass
        ("bops", pa.int64()),  # analytic bit operations of Linear/Conv1d layers over the batch-1 pass
        ("mem_io_bytes", pa.int64()),  # analytic weight + activation bytes moved over the batch-1 pass
        ("kl_to_baseline", pa.float64()),  # mean per-token KL(float ‖ quantized), nats, teacher-forced
        ("top1_agreement", pa.float64()),  # share of those tokens whose argmax agrees with the float model's
        ("kl_tokens", pa.int64()),  # tokens the KL is averaged over
        ("kl_null_reason", pa.string()),  # why kl_to_baseline is NULL
        # (issue 13) the phases of a trial's wall (seconds): the floor is load (once per worker), quantize
        # (once per trial, calibration included), warm-up and timed passes; the rest is measured beside it
        ("warmup_s", pa.float64()),  # the untimed warm-up pass
        ("timed_s", pa.float64()),  # wall of the timed passes (rtf is their compute seconds / audio seconds)
        ("memory_s", pa.float64()),  # reading memory (inline: next to nothing; isolated: the child's pass)
        ("drift_s", pa.float64()),  # the float reference (first trial of a node) and the teacher-forced pass
        ("costs_s", pa.float64()),  # the analytic BOPs and memory I/O
        ("peak_mem_null_reason", pa.string()),  # why peak_mem_bytes is NULL (off, unsupported, or failed)
        ("cost_null_reason", pa.string()),  # why bops / mem_io_bytes are NULL
        # (issue 14) adaptive races (README "Adaptive sweeps"); NULL for grid trials
        ("race_group", pa.string()),  # "family / dataset / hardware": the trials raced against each other
        ("race_rung", pa.int32()),  # rungs this row's numbers are over (a stopped trial: the rung it stopped at)
        ("race_rungs", pa.int32()),  # rungs of the whole schedule (the last one ends on every utterance)
        ("race_dataset_utterances", pa.int32()),  # utterances of the whole dataset (n_utterances: those scored)
        ("race_dataset_audio_s", pa.float64()),  # audio seconds of the whole dataset
        ("race_dominated_by", pa.string()),  # trial_id of the trial that dominated a stopped one
        ("race_reason", pa.string()),  # why it stopped, objective by objective, at which confidence
        ("race_objectives", pa.string()),  # the spec's objectives, comma-separated
        ("race_confidence", pa.float64()),
        ("race_requantized", pa.int32()),  # rungs after the first that had to quantize the model again
        # seconds of the first rung a grid run would also spend once (load, quantize, warm-up, memory, costs)
        ("race_setup_s", pa.float64()),
        # ESTIMATE of the seconds a grid run of this trial over the whole dataset takes: race_setup_s + the timed
        # and drift passes' seconds per scored audio second x the dataset's audio seconds
        ("grid_estimate_s", pa.float64()),
    ]
)

UTTERANCES = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("run_id", pa.string()),
        ("utt_id", pa.string()),
        ("duration_s", pa.float64()),
        ("reference", pa.string()),
        ("hypothesis", pa.string()),  # raw model text; normalised only when scoring
        ("normalizer", pa.string()),
        ("substitutions", pa.int32()),
        ("deletions", pa.int32()),
        ("insertions", pa.int32()),
        ("ref_words", pa.int32()),
        ("ref_chars", pa.int32()),
        ("char_errors", pa.int32()),
        ("seconds", pa.float64()),  # compute seconds of this utterance's batch share in the timed pass
        ("error", pa.string()),
        ("hypothesis_normalized", pa.string()),  # (issue 8) the hypothesis as `normalizer` made it for scoring
        ("rung", pa.int32()),  # (issue 14) the race's rung this utterance was scored in (NULL: a grid trial)
    ]
)

# Re-scoring (`quantsweep rescore`): per-utterance counts and per-run totals under a scoring version.
# The scoring a run got while it ran has the version of its `normalizer` column and lives in the
# trials/utterances tables themselves; these tables only hold later re-scorings.
SCORES = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("sweep", pa.string()),
        ("scoring", pa.string()),  # "<normalizer version>@<UTC time>", e.g. "basic@20260101T120000Z"
        ("normalizer", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("trial_id", pa.string()),
        ("run_id", pa.string()),
        ("utt_id", pa.string()),
        ("substitutions", pa.int32()),
        ("deletions", pa.int32()),
        ("insertions", pa.int32()),
        ("ref_words", pa.int32()),
        ("ref_chars", pa.int32()),
        ("char_errors", pa.int32()),
    ]
)

RUN_SCORES = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("sweep", pa.string()),
        ("scoring", pa.string()),
        ("normalizer", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("trial_id", pa.string()),
        ("run_id", pa.string()),
        ("ref_words", pa.int64()),
        ("word_errors", pa.int64()),
        ("wer", pa.float64()),
        ("cer", pa.float64()),
    ]
)

# Cached bootstrap statistics of one run under one scoring against its baseline run (results/statcache.py).
STATS = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("sweep", pa.string()),
        ("run_id", pa.string()),
        ("scoring", pa.string()),
        ("baseline_run_id", pa.string()),  # "" when the run has no baseline (then only the WER CI is set)
        ("baseline_scoring", pa.string()),
        ("resamples", pa.int32()),
        ("seed", pa.int64()),
        ("n_utterances", pa.int32()),
        ("n_paired", pa.int32()),
        ("wer_ci_low", pa.float64()),
        ("wer_ci_high", pa.float64()),
        ("delta_wer_ci_low", pa.float64()),
        ("delta_wer_ci_high", pa.float64()),
        ("delta_wer_p", pa.float64()),
        ("qoi", pa.float64()),
        ("identical_rate", pa.float64()),
    ]
)

TABLES = {"trials": TRIALS, "utterances": UTTERANCES, "scores": SCORES, "run_scores": RUN_SCORES, "stats": STATS}

# What makes a row unique in each table: compaction keeps one row per key, views dedupe on it.
KEYS = {
    "trials": ("trial_id", "run_id", "finished_at"),
    "utterances": ("trial_id", "run_id", "utt_id"),
    "scores": ("scoring", "run_id", "utt_id"),
    "run_scores": ("scoring", "run_id"),
    "stats": ("run_id", "scoring", "baseline_run_id", "baseline_scoring", "resamples", "seed"),
}


def table_from_rows(table: str, rows: list[dict]) -> pa.Table:
    """Rows as dicts -> an Arrow table of `table`'s schema; missing columns are null, unknown ones an error."""
    schema = TABLES[table]
    unknown = {key for row in rows for key in row} - set(schema.names)
    if unknown:
        raise KeyError(f"{table}: columns not in the schema: {sorted(unknown)}")
    defaults = {"schema_version": SCHEMA_VERSION}
    columns = {name: [row.get(name, defaults.get(name)) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)
