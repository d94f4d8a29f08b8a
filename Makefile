# quantsweep: `make demo` sets everything up and runs the demo sweep; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
UV := $(VENV)/bin/uv pip install --python $(PY)
# The CPU build of PyTorch for this machine kind (an unpinned torch pulls a multi-GB CUDA build).
TORCH_PIN ?= torch==2.13.0
TORCH_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
CACHE ?= $(HOME)/.cache/quantsweep
TEST_WORKERS ?= 2
WHISPER_SDIST := openai-whisper==20250625
export QUANTSWEEP_CACHE := $(CACHE)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup sample-audio synthetic-speech system-packages demo test bench clean-results

setup: $(VENV)/.installed $(CACHE)/whisper-english-spelling.json sample-audio synthetic-speech

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# uv installs what pip would (the same versions), in half of pip's time (47 s against 100 s here, torch
	# aside). torch comes from where pip's configuration finds this machine kind's CPU build (TORCH_LINKS: uv
	# does not read pip's configuration); where it names no place, pip installs torch. Compiled to bytecode
	# at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (this machine kind) no process writes it,
	# and every CLI call and Ray worker would compile Ray, transformers and the rest from source on import
	# (a sweep test: 31 -> 52 s)
	$(PIP) install -q "uv>=0.5"
	$(if $(TORCH_LINKS),$(UV) -q --compile-bytecode --find-links $(TORCH_LINKS) "$(TORCH_PIN)",$(PIP) install -q "$(TORCH_PIN)")
	$(UV) -q --compile-bytecode -e ".[cpu,samples,whisper-base,test,hf]"
	# llmcompressor pins transformers<=5.17 and pulls auto-round; only its GPTQ kernel is used (the ptq
	# cross-check in tests/test_ptq.py), which runs on the transformers here: no dependencies, no pins.
	$(UV) -q --compile-bytecode --no-deps "llmcompressor==0.14.0.1" "compressed-tensors==0.19.0"
	# optimum-quanto compiles its CPU kernels (quanto_cpp) on first use, about a minute on 2 cores: here, once,
	# rather than inside the first quanto trial's warm-up
	$(PY) -c "from optimum.quanto.library.extensions import get_extension; get_extension('quanto_cpp').lib"
	touch $@

# Whisper's English spelling table (used by its text normalizer) ships in the openai-whisper sdist on PyPI.
$(CACHE)/whisper-english-spelling.json: | $(VENV)/.installed
	mkdir -p $(CACHE)/sdist
	$(PIP) download -q --no-deps --no-build-isolation -d $(CACHE)/sdist "$(WHISPER_SDIST)"
	$(PY) -c "import tarfile,glob,sys; t=tarfile.open(glob.glob('$(CACHE)/sdist/openai_whisper-*.tar.gz')[0]); \
	m=[n for n in t.getnames() if n.endswith('whisper/normalizers/english.json')][0]; \
	open(sys.argv[1],'wb').write(t.extractfile(m).read())" $@

# Debian packages, installed where we are root (here and in CI), one apt-get update for all that are missing:
# pocketsphinx-testdata holds real speech (LibriVox, cards); chromium renders the HTML report in its test.
define apt_install
	@missing=""; \
	for pkg in $(1); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: run 'sudo apt-get install$$missing' (without it the demo uses the PyPI clips only)"; fi
endef

sample-audio:
	$(call apt_install,pocketsphinx-testdata)

# Synthetic speech (dataset source `synthetic`, issue 14): espeak-ng voices reading public-domain sentences
# (dict-devil: The Devil's Dictionary, 1911) with sox noise at several SNRs; deterministic, built once per version
# of its builder: the stamp names the builder's content hash, not its mtime, which a fresh clone renews.
SYNTHETIC := $(CACHE)/synthetic-speech-espeak
SYNTHETIC_STAMP := $(SYNTHETIC)/built-by-$(firstword $(shell sha256sum workers/datasets/synthetic.py))
synthetic-speech: $(SYNTHETIC_STAMP)

$(SYNTHETIC_STAMP): | $(VENV)/.installed
	$(call apt_install,espeak-ng sox dict-devil)
	$(PY) -m workers.datasets.synthetic --out $(SYNTHETIC)
	touch $@

system-packages:
	$(call apt_install,pocketsphinx-testdata chromium espeak-ng sox dict-devil)

demo: setup
	$(VENV)/bin/quantsweep run sweeps/demo.yaml

test: system-packages setup
	# one file per worker at a time, the longest files first (tests/conftest.py); three workers on 2 cores were
	# slower (each worker's torch threads wait for cores)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

bench: setup
	$(PY) benchmarks/harness_throughput.py
	$(PY) benchmarks/sweep_efficiency.py
	$(PY) benchmarks/scheduler_overhead.py
	$(PY) benchmarks/query_scale.py

clean-results:
	rm -rf runs
