-- prices (issue 15): each sweep's latest set of the spec's `prices` (what an hour of a machine costs, the user's
-- figures), and trial_prices: the price each trial's machine has. A chip pattern (case-insensitive, anywhere in
-- the chip's name, as `chip:` targets match) wins over its class entry; among chip patterns the first in the spec.
-- Simulated hardware has no price: its class is a label on another machine.
CREATE OR REPLACE VIEW prices AS
SELECT sweep, position, kind, pattern, price_per_hour, currency, written_at
FROM prices_files
QUALIFY written_at = max(written_at) OVER (PARTITION BY sweep)
    AND row_number() OVER (PARTITION BY sweep, written_at, position ORDER BY kind) = 1;

CREATE OR REPLACE VIEW trial_prices AS
SELECT t.sweep, t.trial_id, p.price_per_hour, p.currency
FROM trials AS t
JOIN prices AS p
  ON p.sweep = t.sweep AND NOT coalesce(t.hw_simulated, false)
 AND ((p.kind = 'class' AND p.pattern = t.hw_class)
      OR (p.kind = 'chip' AND lower(t.hw_chip) GLOB '*' || lower(p.pattern) || '*'))
QUALIFY row_number() OVER (PARTITION BY t.sweep, t.trial_id ORDER BY p.kind = 'chip' DESC, p.position) = 1;
