-- leaderboard: per dataset and hardware class, ranked by WER; trade-offs against the fp32 baseline.
CREATE OR REPLACE VIEW leaderboard AS
SELECT
    t.dataset, t.hw_class, t.model, t.quantization, t.library, t.scheme, t.weight_bits, t.act_bits,
    t.granularity, t.group_size,
    rank() OVER (PARTITION BY t.dataset, t.hw_class ORDER BY t.wer, t.cer) AS rank,
    t.wer, t.cer, t.wer - b.baseline_wer AS delta_wer,
    t.rtf, b.baseline_rtf / t.rtf AS speedup, t.latency_p50_s, t.latency_p90_s,
    t.model_size_bytes, t.baseline_size_bytes, 1 - t.model_size_bytes / t.baseline_size_bytes AS size_reduction,
    t.quantized_param_share, t.peak_mem_bytes, t.n_utterances, t.ref_words, t.threads, t.batch_size,
    t.hw_chip, t.host, t.sweep, t.trial_id
FROM trials AS t
JOIN baselines AS b USING (sweep, trial_id)
WHERE t.status = 'ok';
