-- stats_pending: scored ok runs whose statistics (against their current baseline) are not cached yet.
CREATE OR REPLACE VIEW stats_pending AS
SELECT t.sweep, t.run_id, s.scoring, coalesce(b.baseline_run_id, '') AS baseline_run_id,
       coalesce(b.baseline_scoring, '') AS baseline_scoring
FROM current_trials AS t
JOIN scored AS s USING (sweep, trial_id)
JOIN baselines AS b USING (sweep, trial_id)
ANTI JOIN stats AS x
    ON x.run_id = t.run_id AND x.scoring = s.scoring AND x.baseline_run_id = coalesce(b.baseline_run_id, '')
   AND x.baseline_scoring = coalesce(b.baseline_scoring, '')
WHERE t.status = 'ok';
