-- stats: cached bootstrap statistics (results/statcache.py), one row per key, for the chosen resamples and seed.
CREATE OR REPLACE VIEW stats AS
SELECT x.*
FROM stats_files AS x, settings AS s
WHERE x.resamples = s.resamples AND x.seed = s.seed
QUALIFY row_number() OVER (PARTITION BY x.run_id, x.scoring, x.baseline_run_id, x.baseline_scoring) = 1;
