-- pareto: the fronts point by point, per hardware (class, chip and host group), dataset and axis (size: WER vs
-- model bytes, rtf: WER vs real-time factor), in the order a plot draws them.
CREATE OR REPLACE VIEW pareto AS
SELECT hw_class, hw_chip, host_group, hardware, dataset, 'size' AS axis, model_size_bytes::DOUBLE AS x, wer, model,
       quantization, model_size_bytes, rtf, sweep, trial_id
FROM leaderboard WHERE on_pareto_size
UNION ALL
SELECT hw_class, hw_chip, host_group, hardware, dataset, 'rtf' AS axis, rtf AS x, wer, model, quantization,
       model_size_bytes, rtf, sweep, trial_id
FROM leaderboard WHERE on_pareto_rtf
ORDER BY hw_class, hw_chip, host_group, dataset, axis, x;
