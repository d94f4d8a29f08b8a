-- leaderboard: per dataset and hardware (class, then chip and host group: two chips of one class are two
-- machines to compare, never one ranking), scored ok runs ranked by WER, with their trade-offs against the
-- fp32 baseline of their own chip and host group, the bootstrap statistics (NULL until cached), timing spread
-- and the Pareto fronts (WER vs size, WER vs RTF; a run is on a front if no other run of its hardware and
-- dataset is at least as good on both axes and better on one). `hardware` names the partition for people.
-- {metric_columns} / {t.metric_columns}: every metric's own columns (workers/metrics), filled in by results/queries.py.
CREATE OR REPLACE VIEW leaderboard AS
WITH board AS (
    SELECT
        -- simulated hardware (a class label on a CPU) never reads as the real class: it has its own rows
        t.dataset, CASE WHEN t.hw_simulated THEN t.hw_class || ' (simulated)' ELSE t.hw_class END AS hw_class,
        t.hw_simulated, t.model, t.quantization, t.library, t.scheme, t.weight_bits, t.act_bits,
        t.granularity, t.group_size, t.dynamic,
        s.wer, x.wer_ci_low, x.wer_ci_high, s.cer,
        s.wer - b.baseline_wer AS delta_wer, x.delta_wer_ci_low, x.delta_wer_ci_high, x.delta_wer_p,
        x.delta_wer_p < 0.05 AS significant,
        x.qoi, (1 - s.wer) >= 0.99 * (1 - b.baseline_wer) AS meets_99pct, x.identical_rate,
        t.rtf, t.rtf_cv, t.latency_p50_s, t.latency_p90_s, t.latency_cv, t.timing_exclusive,
        (NOT coalesce(t.timing_exclusive, false) OR coalesce(t.rtf_cv, 0) > 0.05
            OR coalesce(t.latency_cv, 0) > 0.05) AS timing_noisy,
        t.timing_repeats, b.baseline_rtf / t.rtf AS speedup,
        t.model_size_bytes, coalesce(t.baseline_size_bytes, b.baseline_model_size_bytes) AS baseline_size_bytes,
        1 - t.model_size_bytes / coalesce(t.baseline_size_bytes, b.baseline_model_size_bytes) AS size_reduction,
        t.quantized_param_share, t.runtime, t.front_end, t.artifact_bytes, t.simulated,
        {t.metric_columns}
        t.library = 'none' AND t.scheme = 'fp32' AS is_baseline,
        t.n_utterances, x.n_paired, s.ref_words, t.audio_seconds, s.scoring, s.normalizer,
        t.threads, t.batch_size, t.hw_chip, coalesce(t.host_group, t.host) AS host_group, t.host,
        t.sweep, t.trial_id, t.run_id,
        b.baseline_trial_id, b.baseline_run_id, b.baseline_wer,
        -- (issue 15) cost: the user's price of an hour of the machine x RTF (compute hours per audio hour);
        -- cores: the threads a CPU trial computed with x RTF (NULL on GPUs)
        pr.price_per_hour, pr.currency, pr.price_per_hour * t.rtf AS cost_per_audio_hour,
        CASE WHEN t.device = 'cpu' THEN t.threads * t.rtf END AS core_hours_per_audio_hour,
        t.runtime_device, t.decoder_loop
    FROM current_trials AS t
    JOIN scored AS s USING (sweep, trial_id)
    JOIN baselines AS b USING (sweep, trial_id)
    LEFT JOIN trial_prices AS pr ON pr.sweep = t.sweep AND pr.trial_id = t.trial_id
    LEFT JOIN stats AS x
        ON x.run_id = t.run_id AND x.scoring = s.scoring AND x.baseline_run_id = coalesce(b.baseline_run_id, '')
       AND x.baseline_scoring = coalesce(b.baseline_scoring, '')
    WHERE t.status = 'ok'
),
axes AS (  -- dense ranks along each axis, so "strictly smaller" is a window frame ending one rank before
    SELECT *,
        CASE WHEN wer IS NOT NULL AND model_size_bytes IS NOT NULL THEN dense_rank() OVER (
            PARTITION BY hw_class, hw_chip, host_group, dataset, wer IS NULL OR model_size_bytes IS NULL
            ORDER BY model_size_bytes) END AS size_step,
        CASE WHEN wer IS NOT NULL AND rtf IS NOT NULL THEN dense_rank() OVER (
            PARTITION BY hw_class, hw_chip, host_group, dataset, wer IS NULL OR rtf IS NULL ORDER BY rtf) END AS rtf_step
    FROM board
),
fronts AS (
    SELECT *,
        min(wer) OVER (PARTITION BY hw_class, hw_chip, host_group, dataset, size_step IS NULL ORDER BY size_step
                       RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS best_wer_smaller,
        min(wer) OVER (PARTITION BY hw_class, hw_chip, host_group, dataset, size_step) AS best_wer_same_size,
        min(wer) OVER (PARTITION BY hw_class, hw_chip, host_group, dataset, rtf_step IS NULL ORDER BY rtf_step
                       RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS best_wer_faster,
        min(wer) OVER (PARTITION BY hw_class, hw_chip, host_group, dataset, rtf_step) AS best_wer_same_rtf
    FROM axes
)
SELECT
    dataset, hw_class, hw_chip, host_group,
    hw_class || ' · ' || coalesce(hw_chip, '?') || ' · ' || coalesce(host_group, '?') AS hardware,
    model, quantization, library, scheme, weight_bits, act_bits, granularity, group_size,
    dynamic,
    rank() OVER (PARTITION BY dataset, hw_class, hw_chip, host_group ORDER BY wer, cer) AS rank,
    wer, wer_ci_low, wer_ci_high, cer, delta_wer, delta_wer_ci_low, delta_wer_ci_high, delta_wer_p, significant,
    qoi, meets_99pct, identical_rate, rtf, rtf_cv, latency_p50_s, latency_p90_s, latency_cv, timing_exclusive,
    timing_noisy, timing_repeats, speedup, model_size_bytes, baseline_size_bytes, size_reduction,
    quantized_param_share, runtime, front_end, artifact_bytes, simulated,
    {metric_columns}
    coalesce(size_step IS NOT NULL AND (best_wer_smaller IS NULL OR wer < best_wer_smaller)
             AND wer <= best_wer_same_size, false) AS on_pareto_size,
    coalesce(rtf_step IS NOT NULL AND (best_wer_faster IS NULL OR wer < best_wer_faster)
             AND wer <= best_wer_same_rtf, false) AS on_pareto_rtf,
    on_pareto_size OR on_pareto_rtf AS on_pareto,
    is_baseline, n_utterances, n_paired, ref_words, audio_seconds, scoring, normalizer, threads, batch_size,
    host, hw_simulated,
    price_per_hour, currency, cost_per_audio_hour, core_hours_per_audio_hour, runtime_device, decoder_loop,
    sweep, trial_id, run_id, baseline_trial_id, baseline_run_id, baseline_wer
FROM fronts;
