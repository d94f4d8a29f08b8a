-- hardware: the machines results came from, one row per hardware class, chip, host group and host (failed and
-- unsupported rows may lack the device, so those are gathered rather than grouped on; rows the driver recorded
-- without running, e.g. unsupported at plan time, have no host and are left out).
-- Simulated hardware has rows of its own, its class marked "(simulated)".
CREATE OR REPLACE VIEW hardware AS
SELECT hw_class, hw_chip, host_group, host, string_agg(DISTINCT device, ', ') AS device,
       any_value(isa_flags) AS isa_flags, bool_or(hw_simulated) AS simulated,
       string_agg(DISTINCT json_extract_string(versions, '$.torch'), ', ') AS torch,
       count(*) AS trials, count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       min(started_at)::VARCHAR AS first_started, max(finished_at)::VARCHAR AS last_finished
FROM (SELECT * REPLACE (CASE WHEN hw_simulated THEN hw_class || ' (simulated)' ELSE hw_class END AS hw_class,
                        coalesce(host_group, host) AS host_group)
      FROM current_trials)
WHERE host IS NOT NULL
GROUP BY hw_class, hw_chip, host_group, host;
