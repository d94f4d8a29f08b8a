"""Backends room: one folder per deployment runtime (its config, its export/quantize step and its runtime)."""
