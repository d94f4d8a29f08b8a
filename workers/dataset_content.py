"""Dataset content room: what identifies a dataset's content, in trial ids (as planned) and on rows (as evaluated).

- `evaluated_hash`: a row's `dataset_hash`, over exactly what the worker evaluated: each utterance's id,
  reference and 16 kHz samples (or why it has none), in utt_id order. Two rows with one hash saw the same audio.
- `source_fingerprint`: the `content` a trial id hashes where a dataset's files can change under one name. Local
  files (folder, librispeech, manifest): the audio and references of the utterances the dataset uses (its
  max_utterances subset); a folder read whole (hf_disk, hf from a local folder): every file in it. `samples`:
  the versions of the packages that ship its clips (pytest-audioeval, Debian's pocketsphinx-testdata), which
  fix their content. A hub dataset: None, its `revision` names its content. A path the driver cannot see:
  None, and the id holds the path alone (the rows' dataset_hash still tells what the workers read).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

from workers.datasets import SOURCES, DatasetConfig, Utterance, require_unique_ids, stable_subset
from workers.datasets.samples import AUDIOEVAL_PACKAGE, POCKETSPHINX_DATA

HASH_CHARS = 20
LISTED_SOURCES = ("folder", "librispeech", "manifest")  # sources that list one audio file per utterance
WHOLE_FOLDER_SOURCES = ("hf_disk", "hf")  # read as a whole from a local folder


def evaluated_hash(utterances: list[Utterance]) -> str:
    digest = hashlib.sha256()
    for u in sorted(utterances, key=lambda u: u.utt_id):
        digest.update(f"{u.utt_id}\0{u.reference}\0".encode())
        digest.update(u.audio.tobytes() if u.audio is not None else f"error\0{u.error}".encode())
    return digest.hexdigest()[:HASH_CHARS]


def source_fingerprint(config: DatasetConfig) -> str | None:
    """The content a trial id holds for this dataset (module docstring); read afresh each time it is planned."""
    if config.source == "samples":
        return f"samples:{AUDIOEVAL_PACKAGE}={_version(AUDIOEVAL_PACKAGE)};pocketsphinx-testdata={_debian_version()}"
    if config.path is None or not Path(config.path).expanduser().exists():
        return None  # a hub dataset, or a path only the workers see
    if config.source in LISTED_SOURCES:
        listed = SOURCES[config.source](config)
        require_unique_ids(config, listed)
        digest = hashlib.sha256()
        for item in sorted(stable_subset(listed, config.max_utterances), key=lambda item: item.utt_id):
            digest.update(f"{item.utt_id}\0{item.reference}\0".encode())
            digest.update(_file_digest(Path(item.origin)))
        return f"files:{digest.hexdigest()[:HASH_CHARS]}"
    root = Path(config.path).expanduser()
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root).as_posix()}\0".encode())
        digest.update(_file_digest(file))
    return f"files:{digest.hexdigest()[:HASH_CHARS]}"


def _file_digest(path: Path) -> bytes:
    if not path.is_file():
        return b"missing"  # listed but absent: the worker records that utterance's error
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _debian_version() -> str:
    """pocketsphinx-testdata's Debian version; `missing` without its clips, `unversioned` where dpkg cannot tell."""
    if not POCKETSPHINX_DATA.is_dir():
        return "missing"
    if shutil.which("dpkg-query") is None:
        return "unversioned"
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "pocketsphinx-testdata"], capture_output=True,
                          text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unversioned"
