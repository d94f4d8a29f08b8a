-- ladder: per model, hardware class and dataset, the quantizations ordered by RTF (fastest first).
CREATE OR REPLACE VIEW ladder AS
SELECT model, hw_class, dataset,
       row_number() OVER (PARTITION BY model, hw_class, dataset ORDER BY rtf, quantization) AS step,
       quantization, library, scheme, weight_bits, rtf, rtf_cv, timing_noisy, speedup, latency_p50_s,
       wer, delta_wer, delta_wer_p, significant, identical_rate, model_size_bytes, size_reduction,
       on_pareto_rtf, is_baseline, sweep, trial_id
FROM leaderboard
WHERE rtf IS NOT NULL;
