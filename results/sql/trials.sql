-- trials: the latest run of every trial (a re-run or a retry replaces the earlier row; a row present both
-- in a compacted part file and a per-trial file counts once).
CREATE OR REPLACE VIEW trials AS
SELECT *
FROM trials_files
QUALIFY row_number() OVER (PARTITION BY sweep, trial_id ORDER BY finished_at DESC NULLS LAST, run_id) = 1;

-- current_trials: what the default tables show. A setup (the trial's config without its eval settings)
-- re-run with other eval settings is a new trial; its latest run supersedes the older settings' run here,
-- while `trials` keeps both. Rows written before v3 have no setup id and stand for themselves.
CREATE OR REPLACE VIEW current_trials AS
SELECT *
FROM trials
QUALIFY row_number() OVER (PARTITION BY sweep, coalesce(setup_id, trial_id)
                           ORDER BY finished_at DESC NULLS LAST, run_id) = 1;
