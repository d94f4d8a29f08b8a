-- ladder: per model, hardware (class, chip and host group) and dataset, the quantizations ordered by RTF
-- (fastest first), whatever runtime ran them, with their size and WER; and (seed 000) how many transcripts are
-- the same as their chip's torch fp32 baseline's: byte for byte (identical_raw_rate) and after the scoring
-- normalizer (identical_normalized_rate).
CREATE OR REPLACE VIEW ladder AS
WITH identity AS (
    SELECT l.sweep, l.trial_id,
           avg((a.hypothesis IS NOT DISTINCT FROM b.hypothesis)::INTEGER) AS identical_raw_rate,
           avg((a.hypothesis_normalized IS NOT DISTINCT FROM b.hypothesis_normalized)::INTEGER)
               AS identical_normalized_rate
    FROM leaderboard AS l
    JOIN utterances AS a ON a.sweep = l.sweep AND a.trial_id = l.trial_id AND a.run_id = l.run_id
    JOIN utterances AS b ON b.run_id = l.baseline_run_id AND b.utt_id = a.utt_id
    WHERE a.error IS NULL AND b.error IS NULL
    GROUP BY l.sweep, l.trial_id
)
SELECT model, hw_class, hw_chip, host_group, hardware, dataset,
       row_number() OVER (PARTITION BY model, hw_class, hw_chip, host_group, dataset ORDER BY rtf, quantization) AS step,
       quantization, library, scheme, weight_bits, runtime, rtf, rtf_cv, timing_noisy, speedup, latency_p50_s,
       wer, delta_wer, delta_wer_p, significant, identical_rate, i.identical_raw_rate, i.identical_normalized_rate,
       model_size_bytes, artifact_bytes, size_reduction, on_pareto_rtf, is_baseline,
       cost_per_audio_hour, currency, core_hours_per_audio_hour, runtime_device, front_end, sweep, trial_id
FROM leaderboard
LEFT JOIN identity AS i USING (sweep, trial_id)
WHERE rtf IS NOT NULL;
