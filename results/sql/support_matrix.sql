-- support_matrix: library x scheme x hardware (class, then chip) -> ok / unsupported (reason) / failed (error
-- class), over the latest run of every trial. `ok` wins when some trials of the cell ran (failures still counted).
-- A row with no chip (decided for a whole class at plan time, or recorded before any node took it) counts for
-- every chip of its class that results came from; where none did, its chip is NULL.
-- Simulated hardware has rows of its own, its class marked "(simulated)".
CREATE OR REPLACE VIEW support_matrix AS
WITH shown AS (
    SELECT * REPLACE (CASE WHEN hw_simulated THEN hw_class || ' (simulated)' ELSE hw_class END AS hw_class)
    FROM current_trials
),
chips AS (SELECT DISTINCT hw_class, hw_chip FROM shown WHERE hw_chip IS NOT NULL),
cells AS (
    SELECT s.* REPLACE (coalesce(s.hw_chip, c.hw_chip) AS hw_chip)
    FROM shown AS s LEFT JOIN chips AS c ON s.hw_chip IS NULL AND c.hw_class = s.hw_class
)
SELECT library, scheme, hw_class, hw_chip,
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
FROM cells
GROUP BY library, scheme, hw_class, hw_chip;
