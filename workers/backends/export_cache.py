"""Backends room, shared part: a float export done once per machine and reused by every trial and worker.

An export lives at `<cache>/exports/<kind>-<fingerprint>`, where the fingerprint hashes the checkpoint's
content (config and a sample of its weight files) and the exporter's version; it is written in a staging
directory and renamed into place whole, so workers racing on one node keep whichever finished first.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from workers.models import cache_root
from workers.models.ct2_checkpoint import content_sample

log = logging.getLogger(__name__)


def checkpoint_fingerprint(path: str, version: str) -> str:
    """Short hash of a transformers checkpoint directory's content and of the exporter's `version`."""
    digest = hashlib.sha256(version.encode())
    directory = Path(path)
    if not directory.is_dir():  # a hub id: its name stands for its content
        digest.update(path.encode())
        return digest.hexdigest()[:16]
    for file in sorted(directory.iterdir()):
        if file.suffix in (".json", ".safetensors", ".bin"):
            digest.update(file.name.encode())
            content_sample(file, digest)
    return digest.hexdigest()[:16]


def cached_export(kind: str, fingerprint: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The export directory for (kind, fingerprint), built by `build(staging_dir)` on the first call only;
    and whether it was reused."""
    target = cache_root() / "exports" / f"{kind}-{fingerprint}"
    if target.is_dir():
        return target, True
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        build(staging)
        staging.chmod(0o755)  # mkdtemp made it private; every worker on the node reads the cache
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if target.is_dir():  # another worker renamed its export into place first
            return target, True
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s", target)
    return target, False
