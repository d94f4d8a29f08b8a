-- scored: one score per latest ok run under the chosen scoring (settings.scoring):
--   'latest'   each run's most recent scoring (a rescore, else the one it got at run time)
--   'original' the scoring each run got at run time
--   otherwise  that exact scoring version, or the most recent scoring with that normalizer
CREATE OR REPLACE VIEW scored AS
SELECT r.*
FROM run_scores AS r, settings AS s
WHERE CASE s.scoring
          WHEN 'latest' THEN true
          WHEN 'original' THEN NOT r.rescored
          ELSE r.scoring = s.scoring OR r.normalizer = s.scoring
      END
QUALIFY row_number() OVER (PARTITION BY r.sweep, r.trial_id ORDER BY r.scored_at DESC, r.scoring DESC) = 1;
