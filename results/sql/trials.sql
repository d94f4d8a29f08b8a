-- trials: the latest run of every trial (a re-run or a retry replaces the earlier row).
CREATE OR REPLACE VIEW trials AS
SELECT * EXCLUDE ("table")
FROM trials_files
QUALIFY row_number() OVER (PARTITION BY sweep, trial_id ORDER BY finished_at DESC NULLS LAST) = 1;
