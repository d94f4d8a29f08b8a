"""Sweep: the driver (spec, plan, scheduler, CLI)."""
