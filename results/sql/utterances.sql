-- utterances: the rows of each trial's latest run only, once each (compaction may leave a copy behind).
CREATE OR REPLACE VIEW utterances AS
SELECT u.*
FROM utterances_files AS u
SEMI JOIN trials AS t ON t.sweep = u.sweep AND t.trial_id = u.trial_id AND t.run_id = u.run_id
QUALIFY row_number() OVER (PARTITION BY u.sweep, u.trial_id, u.run_id, u.utt_id) = 1;
