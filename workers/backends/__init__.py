"""Backend registry: every folder under workers/backends/ is one backend, found by name, no list to edit.

A backend's `__init__.py` declares `LIBRARIES` (the spec's `library` names it answers: their config models and
classes) and `RUNTIMES` (what runs the deployables they produce). Adding a runtime is adding one folder.
Plugins (QUANTSWEEP_PLUGINS) add libraries with `register` before the spec's union of configs is built.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Union

from pydantic import Field

from results.schema import register_columns
from workers.backends.base import Deployable, Library, QuantConfig, Runtime
from workers.plugins import load_plugins

LIBRARIES: dict[str, type[Library]] = {}  # spec `library` -> class
RUNTIMES: dict[str, Runtime] = {}  # runtime name -> runtime
BACKENDS: dict[str, list[str]] = {}  # backend folder -> the libraries it brings


def register(library: type[Library], backend: str = "plugin") -> type[Library]:
    """Add a library; it must be registered before the spec's union of configs is built (at import)."""
    LIBRARIES[library.library] = library
    BACKENDS.setdefault(backend, []).append(library.library)
    return library


for _found in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _found.ispkg:
        _backend = importlib.import_module(f"{__name__}.{_found.name}")
        for _library in _backend.LIBRARIES:
            register(_library, _found.name)
        for _runtime in _backend.RUNTIMES:
            RUNTIMES[_runtime.name] = _runtime
            register_columns("trials", list(_runtime.columns), _runtime.name)

load_plugins()

QuantizationConfig = Annotated[
    Union[tuple(q.config_type for q in LIBRARIES.values())],  # type: ignore[valid-type]
    Field(discriminator="library"),
]


def library_for(config: QuantConfig) -> Library:
    return LIBRARIES[config.library](config)


def runtime_of(deployable: Deployable) -> Runtime:
    return RUNTIMES[deployable.runtime]
