-- utterances: the rows of each trial's latest run only.
CREATE OR REPLACE VIEW utterances AS
SELECT u.* EXCLUDE ("table")
FROM utterances_files AS u
JOIN trials AS t USING (sweep, trial_id, run_id);
