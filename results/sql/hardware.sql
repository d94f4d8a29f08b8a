-- hardware: the machines results came from, one row per class, chip, host and device.
CREATE OR REPLACE VIEW hardware AS
SELECT hw_class, hw_chip, host, device, any_value(isa_flags) AS isa_flags, bool_or(hw_simulated) AS simulated,
       string_agg(DISTINCT json_extract_string(versions, '$.torch'), ', ') AS torch,
       count(*) AS trials, count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       min(started_at)::VARCHAR AS first_started, max(finished_at)::VARCHAR AS last_finished
FROM trials
WHERE host IS NOT NULL
GROUP BY hw_class, hw_chip, host, device;
