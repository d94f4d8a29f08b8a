-- run_scores: corpus WER/CER of each latest ok run under every scoring version (run time and re-scorings).
CREATE OR REPLACE VIEW run_scores AS
SELECT sweep, trial_id, run_id, normalizer AS scoring, normalizer, false AS rescored, finished_at AS scored_at,
       ref_words, word_errors, wer, cer
FROM trials
WHERE status = 'ok'
UNION ALL BY NAME
SELECT r.sweep, r.trial_id, r.run_id, r.scoring, r.normalizer, true AS rescored, r.scored_at,
       r.ref_words, r.word_errors, r.wer, r.cer
FROM (SELECT * FROM run_scores_files QUALIFY row_number() OVER (PARTITION BY scoring, run_id) = 1) AS r
SEMI JOIN trials AS t ON t.sweep = r.sweep AND t.trial_id = r.trial_id AND t.run_id = r.run_id AND t.status = 'ok';
