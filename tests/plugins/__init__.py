"""Test-only plugins (loaded through QUANTSWEEP_PLUGINS): small models and trials that sleep or crash."""
