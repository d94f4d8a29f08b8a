-- baselines: each ok trial beside the same model's fp32 run on the same hardware class and dataset.
CREATE OR REPLACE VIEW baselines AS
SELECT t.sweep, t.trial_id, b.trial_id AS baseline_trial_id,
       b.wer AS baseline_wer, b.cer AS baseline_cer, b.rtf AS baseline_rtf,
       b.latency_p50_s AS baseline_latency_p50_s, b.model_size_bytes AS baseline_model_size_bytes
FROM trials AS t
LEFT JOIN (
    SELECT * FROM trials
    WHERE status = 'ok' AND library = 'none' AND scheme = 'fp32'
    QUALIFY row_number() OVER (PARTITION BY model, hw_class, dataset ORDER BY finished_at DESC) = 1
) AS b ON b.model = t.model AND b.hw_class = t.hw_class AND b.dataset = t.dataset
WHERE t.status = 'ok';
