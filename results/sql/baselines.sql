-- baselines: each scored ok trial beside the same model's unquantized (library none, fp32) run that can be
-- compared with it: the same dataset and normalizer (else ΔWER would compare two scorings), the same chip,
-- host group and simulation state (else speed-up would divide one machine's RTF by another's), and the same
-- eval settings (batch size, beams, threads, repeats...). A baseline of the same sweep is preferred, then
-- the most recent. Rows written before v3 have no host group or eval settings: their host and NULL match.
CREATE OR REPLACE VIEW baselines AS
WITH candidates AS (
    SELECT t.sweep, t.trial_id, t.run_id, t.model, t.hw_class, t.hw_chip, t.hw_simulated,
           coalesce(t.host_group, t.host) AS host_group, t.eval_config, t.dataset, t.finished_at, t.rtf,
           t.latency_p50_s, t.model_size_bytes, s.scoring, s.normalizer, s.wer, s.cer
    FROM current_trials AS t JOIN scored AS s USING (sweep, trial_id)
    WHERE t.status = 'ok' AND t.library = 'none' AND t.scheme = 'fp32'
)
SELECT t.sweep, t.trial_id, b.sweep AS baseline_sweep, b.trial_id AS baseline_trial_id,
       b.run_id AS baseline_run_id, b.scoring AS baseline_scoring,
       b.wer AS baseline_wer, b.cer AS baseline_cer, b.rtf AS baseline_rtf,
       b.latency_p50_s AS baseline_latency_p50_s, b.model_size_bytes AS baseline_model_size_bytes
FROM current_trials AS t
JOIN scored AS s USING (sweep, trial_id)
LEFT JOIN candidates AS b
    ON b.model = t.model AND b.hw_class = t.hw_class AND b.dataset = t.dataset AND b.normalizer = s.normalizer
   AND b.hw_chip IS NOT DISTINCT FROM t.hw_chip AND b.hw_simulated IS NOT DISTINCT FROM t.hw_simulated
   AND b.host_group IS NOT DISTINCT FROM coalesce(t.host_group, t.host)
   AND b.eval_config IS NOT DISTINCT FROM t.eval_config
WHERE t.status = 'ok'
QUALIFY row_number() OVER (PARTITION BY t.sweep, t.trial_id
                           ORDER BY (b.sweep = t.sweep) DESC NULLS LAST, b.finished_at DESC NULLS LAST) = 1;
