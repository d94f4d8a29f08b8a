"""Plugin room: modules named in QUANTSWEEP_PLUGINS are imported before the registries are read.

A plugin registers quantizers (workers.backends.register) and model families (FAMILIES) of its own; the
test suite and the scheduler benchmark use this for no-op and crashing trials. Every process that builds or
runs trials (the driver and each Ray worker) imports the same plugins, since they inherit the variable.
"""
from __future__ import annotations

import importlib
import os

ENV = "QUANTSWEEP_PLUGINS"


def load_plugins() -> list[str]:
    names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    for name in names:
        importlib.import_module(name)
    return names
