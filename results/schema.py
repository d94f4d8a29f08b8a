"""The results contract: Arrow schemas of the `trials` and `utterances` tables and their version."""
from __future__ import annotations

import pyarrow as pa

# Version 2 added `latency_cv`. Version 3 added, for issue 7, `model_mem_bytes`, `setup_id`, `eval_config`,
# `host_group` and `quantsweep_version` (and gave `peak_mem_bytes` its isolated meaning, see peak_mem_kind);
# for issue 8 the runtime columns: `runtime`, `front_end`, `artifact_bytes`, `runtime_*_s` of trials, and
# `hypothesis_normalized` of utterances; for issue 9 the simulated-quantization flag, the analytic size,
# BOPs, memory I/O, the decoded token and window counts, and the KL/top-1 drift from the float model.
# Readers take every older version: columns a file lacks read as
# null (DuckDB union_by_name, pyarrow dataset schemas), so a v1 row is a v2 row without latency spread.
# Version 4 (issue 13): the phase seconds and the NULL reasons of the measurements beside the floor; CPU
# peak memory read inline around the timed passes by default (peak_mem_kind says which method).
# Version 5 (issues 14, 15, 16): `runtime_device` and `decoder_loop` of the deployment runtimes, the `prices` table;
# metrics and runtimes own their columns (register_columns), `floor_s`, `act_bits` NULL for float activations;
# adaptive races: statuses `racing` and `stopped`, the race_* columns and grid_estimate_s of trials, the `rung`
# of utterances; what the results came from, for reproducing them: the hub commit of the model, the hub
# revision of the dataset, and the hash of the evaluated dataset's content.
# Version 6 (issue 17): what calibration fed a torch quantizer: calibration_pass, calibration_tokens,
# calibration_frames. Version 7 (issue 17): AWQ's decoder clipping judged on the calibration clips' transcripts:
# decoder_clipped, calibration_wer_clipped, calibration_wer_unclipped. Version 8 (issue 17): the judge counts the
# calibration clips whose transcript runs on: calibration_run_on_clipped, calibration_run_on_unclipped.
SCHEMA_VERSION = 8

# Trial statuses: `ok` measured; `failed` raised (error holds type, message, traceback tail);
# `unsupported` the library cannot run the scheme on the device (error holds the reason);
# `no_capacity` no live node of the targeted class within the wait; (issue 14, strategy adaptive) `racing` a
# trial of an unfinished race, scored on its first rungs (a later run continues it); `stopped` the race stopped
# it: another trial of its group was better with confidence (race_dominated_by, race_reason), and its numbers
# are over the race_rung rungs (n_utterances utterances) it was scored on.
STATUSES = ("ok", "failed", "unsupported", "no_capacity", "racing", "stopped")

# The trials columns every row has; metrics and runtimes add their own (register_columns).
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
        ("model_revision", pa.string()),  # v5: the hub commit the weights came from (NULL: local or packaged)
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
        ("calibration_pass", pa.string()),  # v6: teacher-forced | generate (torch quantizers; NULL uncalibrated)
        ("calibration_tokens", pa.int64()),  # v6: decoder positions one calibration pass fed the model
        ("calibration_frames", pa.int64()),  # v6: encoder frames (windows x encoder positions) one pass fed it
        # v7: AWQ kept its searched decoder clipping (NULL: not judged), and the WER of the greedy transcripts of
        # the calibration clips with it and without it
        ("decoder_clipped", pa.bool_()),
        ("calibration_wer_clipped", pa.float64()),
        ("calibration_wer_unclipped", pa.float64()),
        # v8: of those clips, how many ran on (more inserted words than the reference holds), with it and without
        ("calibration_run_on_clipped", pa.int32()),
        ("calibration_run_on_unclipped", pa.int32()),
        ("dataset", pa.string()),
        ("dataset_revision", pa.string()),  # v5: the hub dataset's revision the spec pinned (NULL: its default)
        # v5: sha256 (20 hex) over the evaluated utterances' ids, references and 16 kHz samples, in utt_id order
        ("dataset_hash", pa.string()),
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
        # (issue 9) simulated quantization, and what the batch-1 pass ran (for the analytic costs)
        ("simulated", pa.bool_()),  # values rounded to the grid but stored and computed in float32 (ptq)
        ("encoder_windows", pa.int64()),  # encoder windows run in the batch-1 pass
        ("decoded_tokens", pa.int64()),  # decoder steps run in the batch-1 pass
        # (issue 13) the phases of a trial's wall (seconds): the floor is load (once per worker), quantize
        # (once per trial, calibration included), warm-up and timed passes; each metric's own `<metric>_s` is
        # what was measured beside it (workers/metrics)
        ("warmup_s", pa.float64()),  # the untimed warm-up pass
        ("timed_s", pa.float64()),  # wall of the timed passes (rtf is their compute seconds / audio seconds)
        # the floor's part of compute_s: load_s (unless model_reused) + quantize_s (unless quantized_reused)
        # + warmup_s + timed_s; the rest of compute_s is the metrics' `<metric>_s`, sizes and scoring
        ("floor_s", pa.float64()),
        # (issue 15) what a deployment runtime computed on, in its own words (ONNX Runtime's execution provider,
        # OpenVINO's device, MLX's device and build: "mlx-cpu build: not Apple silicon"), and what ran the
        # decoding loop (mlx_whisper's decode, or quantsweep's greedy loop over the exported graphs)
        ("runtime_device", pa.string()),
        ("decoder_loop", pa.string()),
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

# (issue 15) the spec's `prices`, written by each run of a sweep (the latest set applies): per hour of a hardware
# class or of chips matching a pattern (fnmatch, as `chip:` targets; a chip entry wins over its class)
PRICES = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("sweep", pa.string()),
        ("written_at", pa.timestamp("us", tz="UTC")),
        ("position", pa.int32()),  # the entry's place in the spec: the first matching chip pattern applies
        ("kind", pa.string()),  # "class" or "chip"
        ("pattern", pa.string()),  # the class name, or the chip pattern (case-insensitive, anywhere in the name)
        ("price_per_hour", pa.float64()),
        ("currency", pa.string()),  # the spec's `currency` label, NULL when it gave none
    ]
)

TABLES = {"trials": TRIALS, "utterances": UTTERANCES, "scores": SCORES, "run_scores": RUN_SCORES, "stats": STATS,
          "prices": PRICES}
# Columns added by their owners (a metric in workers/metrics, a runtime's own timers), by table: name -> owner.
OWNED: dict[str, dict[str, str]] = {table: {} for table in TABLES}
# Registered trials columns that the leaderboard view carries (results/sql/leaderboard.sql `{metric_columns}`).
LEADERBOARD_COLUMNS: list[str] = []


def register_columns(table: str, fields: list[pa.Field], owner: str, leaderboard: bool = False) -> None:
    """Add `owner`'s columns to `table` (idempotent); a name already taken with another type or owner is refused.

    Every process that writes or rewrites rows registers them first (workers.metrics and workers.backends do
    on import); readers union each file's own columns with these, so a column is never dropped by a process
    that did not register it.
    """
    schema = TABLES[table]
    for f in fields:
        if f.name in schema.names:
            if schema.field(f.name).type != f.type or OWNED[table].get(f.name, owner) != owner:
                raise ValueError(f"{table}.{f.name}: registered by {OWNED[table].get(f.name, 'the core schema')} "
                                 f"as {schema.field(f.name).type}, {owner} asks for {f.type}")
            continue
        schema = schema.append(f)
        OWNED[table][f.name] = owner
        if leaderboard:
            LEADERBOARD_COLUMNS.append(f.name)
    TABLES[table] = schema

# What makes a row unique in each table: compaction keeps one row per key, views dedupe on it.
KEYS = {
    "trials": ("trial_id", "run_id", "finished_at"),
    "utterances": ("trial_id", "run_id", "utt_id"),
    "scores": ("scoring", "run_id", "utt_id"),
    "run_scores": ("scoring", "run_id"),
    "stats": ("run_id", "scoring", "baseline_run_id", "baseline_scoring", "resamples", "seed"),
    "prices": ("sweep", "written_at", "position"),
}


def with_columns_of(table: str, found: pa.Schema) -> pa.Schema:
    """`table`'s schema plus the columns a file has that this process has not registered: kept, never dropped."""
    schema = TABLES[table]
    return pa.schema(list(schema) + [f for f in found if f.name not in schema.names])


def table_from_rows(table: str, rows: list[dict]) -> pa.Table:
    """Rows as dicts -> an Arrow table of `table`'s schema; missing columns are null, unknown ones an error."""
    schema = TABLES[table]
    unknown = {key for row in rows for key in row} - set(schema.names)
    if unknown:
        raise KeyError(f"{table}: columns not in the schema: {sorted(unknown)}")
    defaults = {"schema_version": SCHEMA_VERSION}
    columns = {name: [row.get(name, defaults.get(name)) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)
