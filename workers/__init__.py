"""Workers: what runs where a trial lands (hardware probe, models, quantizers, datasets, evaluation)."""
