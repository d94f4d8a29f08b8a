-- baselines: each scored ok trial beside the same model's unquantized (library none, fp32) run on the same
-- hardware class and dataset, scored with the same normalizer (else ΔWER would compare two scorings).
-- A baseline of the same sweep is preferred, then the most recent.
CREATE OR REPLACE VIEW baselines AS
WITH candidates AS (
    SELECT t.sweep, t.trial_id, t.run_id, t.model, t.hw_class, t.dataset, t.finished_at, t.rtf,
           t.latency_p50_s, t.model_size_bytes, s.scoring, s.normalizer, s.wer, s.cer
    FROM trials AS t JOIN scored AS s USING (sweep, trial_id)
    WHERE t.status = 'ok' AND t.library = 'none' AND t.scheme = 'fp32'
)
SELECT t.sweep, t.trial_id, b.sweep AS baseline_sweep, b.trial_id AS baseline_trial_id,
       b.run_id AS baseline_run_id, b.scoring AS baseline_scoring,
       b.wer AS baseline_wer, b.cer AS baseline_cer, b.rtf AS baseline_rtf,
       b.latency_p50_s AS baseline_latency_p50_s, b.model_size_bytes AS baseline_model_size_bytes
FROM trials AS t
JOIN scored AS s USING (sweep, trial_id)
LEFT JOIN candidates AS b
    ON b.model = t.model AND b.hw_class = t.hw_class AND b.dataset = t.dataset AND b.normalizer = s.normalizer
WHERE t.status = 'ok'
QUALIFY row_number() OVER (PARTITION BY t.sweep, t.trial_id
                           ORDER BY (b.sweep = t.sweep) DESC NULLS LAST, b.finished_at DESC NULLS LAST) = 1;
