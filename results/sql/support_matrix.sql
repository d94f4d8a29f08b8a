-- support_matrix: library x scheme x hardware class -> ok / unsupported (reason) / failed (error class),
-- over the latest run of every trial. `ok` wins when some trials of the cell ran (failures still counted).
-- Simulated hardware has rows of its own, its class marked "(simulated)".
CREATE OR REPLACE VIEW support_matrix AS
SELECT library, scheme, hw_class,
       CASE WHEN count(*) FILTER (WHERE status = 'ok') > 0 THEN 'ok'
            WHEN count(*) FILTER (WHERE status = 'unsupported') > 0 THEN 'unsupported'
            WHEN count(*) FILTER (WHERE status = 'failed') > 0 THEN 'failed'
            ELSE 'no_capacity' END AS state,
       min(split_part(error, chr(10), 1)) FILTER (WHERE status = 'unsupported') AS reason,
       string_agg(DISTINCT error_type, ', ' ORDER BY error_type) FILTER (WHERE status = 'failed') AS error_classes,
       count(*) FILTER (WHERE status = 'ok') AS n_ok,
       count(*) FILTER (WHERE status = 'failed') AS n_failed,
       count(*) FILTER (WHERE status = 'unsupported') AS n_unsupported,
       count(*) FILTER (WHERE status = 'no_capacity') AS n_no_capacity
FROM (SELECT * REPLACE (CASE WHEN hw_simulated THEN hw_class || ' (simulated)' ELSE hw_class END AS hw_class)
      FROM current_trials)
GROUP BY library, scheme, hw_class;
