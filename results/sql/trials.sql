-- trials: the latest run of every trial (a re-run or a retry replaces the earlier row; a row present both
-- in a compacted part file and a per-trial file counts once).
CREATE OR REPLACE VIEW trials AS
SELECT *
FROM trials_files
QUALIFY row_number() OVER (PARTITION BY sweep, trial_id ORDER BY finished_at DESC NULLS LAST, run_id) = 1;
