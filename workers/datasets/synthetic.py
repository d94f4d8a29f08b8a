"""Dataset source `synthetic`: a larger offline English set, espeak-ng voices reading public-domain sentences with
sox noise at several SNRs, built once per machine (`make synthetic-speech`) and read as dataset source `synthetic`.

The sentences come from Ambrose Bierce's "The Devil's Dictionary" (1911; public domain, its copyright expired,
as the Debian package `dict-devil` states in its copyright file). Each utterance is one sentence read by one of
several espeak-ng voices at one speaking rate, mixed with sox-generated noise (white, pink or brown) at a
signal-to-noise ratio from SNRS_DB (or left clean). References are the sentences exactly as spoken. This is
synthetic speech: its name, its utterance ids and its folder say so; real speech stays the demo's default.

Two splits: `eval` (the first UTTERANCES sentences) and `calibration` (the next CALIBRATION_UTTERANCES, never in
eval), which calibrated PTQ reads by default: English speech with its exact references to teacher-force.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from workers.datasets.base import DatasetError, ListedUtterance, listed_file
from workers.datasets.config import DatasetConfig
from workers.models import cache_root

FOLDER = "synthetic-speech-espeak"
PREFIX = "synthetic-espeak"  # every utterance id starts with it: the rows say the speech is synthetic
DEVIL = Path("/usr/share/dictd/devil.dict.dz")
SAMPLE_RATE = 16_000
UTTERANCES = 600
CALIBRATION_UTTERANCES = 64
# espeak-ng voices (accent + voice variant) and speaking rates (words per minute), cycled over the sentences
# (the voices Whisper tiny.en transcribes best among espeak-ng's: its female variants, Scottish and Caribbean
# accents doubled the WER on a trial of 12 sentences each)
VOICES = ("en-us", "en-us+m3", "en-us+m1", "en-gb", "en-gb+m3", "en-gb-x-rp")
RATES = (145, 160, 175)
# (noise, SNR in dB); None: clean. The SNR is the mean power of the speech clip over that of the noise added.
CONDITIONS = ((None, None), ("pinknoise", 25), ("whitenoise", 20), ("brownnoise", 15), ("pinknoise", 10))
NOISE_S = 120  # one repeatable sox noise recording per kind; each utterance takes a slice at its own offset
WORDS = (6, 18)  # sentence length bounds, in words
HINT = "build it with `make synthetic-speech` (needs espeak-ng, sox and dict-devil: apt-get install, as root)"


def sentences(text: str) -> list[str]:
    """Plain sentences of the dictionary's definitions: letters and light punctuation, 6-18 words, each once."""
    body = text[text.index("ABASEMENT, n."):]
    flat = " ".join(body.split())
    found, seen = [], set()
    for sentence in re.split(r"(?<=[.?!])\s+", flat):
        words = sentence.split()
        if not WORDS[0] <= len(words) <= WORDS[1]:
            continue
        if "--" in sentence or not re.fullmatch(r"[A-Z][a-z]*(?:[ ,;'-]+[A-Za-z]+)*[.?!]", sentence):
            continue  # digits, quotes, italics marks, headwords, abbreviations (n., v.t.) and verse are left out
        if any(len(w) > 1 and w.isupper() for w in re.findall(r"[A-Za-z]+", sentence)):
            continue
        key = sentence.lower()
        if key not in seen:
            seen.add(key)
            found.append(sentence)
    return found


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} ... failed ({done.returncode}): {done.stderr.strip()[:500]}")


def _noise(kind: str, work: Path) -> np.ndarray:
    """sox's repeatable mode (-R) seeds its generator with a fixed number: the same noise on every machine."""
    path = work / f"{kind}.wav"
    _run(["sox", "-R", "-n", "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", str(path), "synth", str(NOISE_S), kind])
    return sf.read(path, dtype="float64")[0]


def _speech(sentence: str, voice: str, rate: int, work: Path) -> np.ndarray:
    raw, resampled = work / "espeak.wav", work / "speech.wav"
    _run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), sentence])
    _run(["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", str(resampled)])
    return sf.read(resampled, dtype="float64")[0]


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Speech plus noise scaled so that mean power(speech) / mean power(noise) is 10^(snr_db / 10)."""
    scale = np.sqrt(np.mean(speech**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return speech + scale * noise


def build(out: Path, count: int = UTTERANCES, calibration: int = CALIBRATION_UTTERANCES) -> Path:
    """Write `count` eval utterances and `calibration` more (WAV, 16 kHz) and manifest.jsonl into `out`; the same
    bytes on every run."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: {HINT}")
    if not DEVIL.is_file():
        raise SystemExit(f"{DEVIL} is missing: {HINT}")
    chosen = sentences(gzip.open(DEVIL).read().decode("latin-1"))
    if len(chosen) < count + calibration:
        raise SystemExit(f"{DEVIL} gave {len(chosen)} usable sentences, fewer than the {count + calibration} asked for")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "audio").mkdir(parents=True)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        noises = {kind: _noise(kind, work) for kind, _ in CONDITIONS if kind}
        for index, sentence in enumerate(chosen[:count + calibration]):
            voice, rate = VOICES[index % len(VOICES)], RATES[(index // len(VOICES)) % len(RATES)]
            kind, snr = CONDITIONS[(index // (len(VOICES) * len(RATES))) % len(CONDITIONS)]
            audio = _speech(sentence, voice, rate, work)
            if kind:
                offset = int(hashlib.sha256(sentence.encode()).hexdigest(), 16) % (len(noises[kind]) - len(audio))
                audio = mix(audio, noises[kind][offset:offset + len(audio)], snr)
            audio = audio / max(1.0, float(np.max(np.abs(audio))) / 0.99)  # no clipping
            condition = f"snr{snr}-{kind}" if kind else "clean"
            utt_id = f"{PREFIX}/{voice.replace('+', '-')}/{condition}/{index:04d}"
            wav = f"audio/{index:04d}.wav"
            sf.write(staging / wav, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            entries.append({"utt_id": utt_id, "audio_filepath": wav, "text": sentence, "voice": voice,
                            "split": "eval" if index < count else "calibration",
                            "rate_wpm": rate, "noise": kind, "snr_db": snr, "synthetic": True})
    (staging / "manifest.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    (staging / "README.txt").write_text(
        "SYNTHETIC SPEECH, not recordings of people: espeak-ng voices reading sentences of Ambrose Bierce's\n"
        "The Devil's Dictionary (1911, public domain: Debian package dict-devil), sox noise at several SNRs.\n"
        f"Built by quantsweep's workers/datasets/synthetic.py with {_version(['espeak-ng', '--version'])} and "
        f"{_version(['sox', '--version'])}.\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def _version(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True).stdout.strip().splitlines()[0]


def default_dir() -> Path:
    return cache_root() / FOLDER


def synthetic_utterances(config: DatasetConfig) -> list[ListedUtterance]:
    """The built set's manifest (its folder: `path`, else the cache's), one split of it; a clear error when it was
    never built, or built before it had that split."""
    root = Path(config.path).expanduser() if config.path else default_dir()
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise DatasetError(f"dataset {config.name!r}: the synthetic speech set is not built ({manifest} is "
                           f"missing); {HINT}")
    listed = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
            if entry.get("split", "eval") == (config.split or "eval"):
                listed.append(listed_file(entry["utt_id"], entry["text"], root / entry["audio_filepath"]))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise DatasetError(f"{manifest} line {number}: not a synthetic-speech entry ({error})") from None
    if not listed:
        raise DatasetError(f"dataset {config.name!r}: {manifest} has no {config.split or 'eval'!r} utterances (built "
                           f"by an older quantsweep, or with none asked for); {HINT}")
    return listed


SOURCES = {"synthetic": synthetic_utterances}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_dir())
    parser.add_argument("--utterances", type=int, default=UTTERANCES, help="the eval split's")
    parser.add_argument("--calibration-utterances", type=int, default=CALIBRATION_UTTERANCES)
    args = parser.parse_args(argv)
    built = build(args.out, args.utterances, args.calibration_utterances)
    print(f"{args.utterances} + {args.calibration_utterances} (calibration) synthetic utterances in {built}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
