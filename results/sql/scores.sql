-- scores: per-utterance word/char error counts of the latest runs under every scoring version: the one
-- given at run time (version = its normalizer, scored when the run finished) and each `rescore`.
CREATE OR REPLACE VIEW scores AS
SELECT u.sweep, u.trial_id, u.run_id, u.utt_id, u.normalizer AS scoring, u.normalizer, false AS rescored,
       u.substitutions, u.deletions, u.insertions, u.substitutions + u.deletions + u.insertions AS word_errors,
       u.ref_words, u.ref_chars, u.char_errors, u.hypothesis
FROM utterances AS u
WHERE u.error IS NULL
UNION ALL BY NAME
SELECT s.sweep, s.trial_id, s.run_id, s.utt_id, s.scoring, s.normalizer, true AS rescored,
       s.substitutions, s.deletions, s.insertions, s.substitutions + s.deletions + s.insertions AS word_errors,
       s.ref_words, s.ref_chars, s.char_errors, u.hypothesis
FROM (SELECT * FROM scores_files
      QUALIFY row_number() OVER (PARTITION BY scoring, run_id, utt_id) = 1) AS s
JOIN utterances AS u USING (sweep, trial_id, run_id, utt_id);
