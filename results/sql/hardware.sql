-- hardware: the machines results came from, one row per hardware class and host (failed and unsupported
-- rows may lack chip and device, so those are gathered rather than grouped on).
-- Simulated hardware has rows of its own, its class marked "(simulated)".
CREATE OR REPLACE VIEW hardware AS
SELECT hw_class, host, string_agg(DISTINCT hw_chip, ', ') AS hw_chip, string_agg(DISTINCT device, ', ') AS device,
       any_value(isa_flags) AS isa_flags, bool_or(hw_simulated) AS simulated,
       string_agg(DISTINCT json_extract_string(versions, '$.torch'), ', ') AS torch,
       count(*) AS trials, count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       min(started_at)::VARCHAR AS first_started, max(finished_at)::VARCHAR AS last_finished
FROM (SELECT * REPLACE (CASE WHEN hw_simulated THEN hw_class || ' (simulated)' ELSE hw_class END AS hw_class)
      FROM current_trials)
WHERE host IS NOT NULL
GROUP BY hw_class, host;
