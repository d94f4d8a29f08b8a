"""Every quantizer on a small random Whisper on this CPU, the support matrix on other device classes, config errors."""
from __future__ import annotations

import copy
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn
from transformers import WhisperConfig, WhisperForConditionalGeneration

from workers.device import Device
from workers.backends import LIBRARIES, QuantizationConfig, library_for
from workers.backends.base import Modules, QuantConfig, selected_linears

CPU = Device("x86-cpu")
CUDA = Device("cuda", "cuda:0", simulated=True)
APPLE = Device("apple", "mps", simulated=True)
ARM = Device("arm-cpu", simulated=True)
MEL_FRAMES = 64  # 2 x max_source_positions: Whisper's encoder takes exactly this many frames
MAX_NEW_TOKENS = 6

parse = TypeAdapter(QuantizationConfig).validate_python

# Every library and scheme that runs on this CPU, with the knobs worth seeing change.
CPU_SPECS = [
    {"library": "torch"},
    {"library": "torchao", "scheme": "int8-weight-only"},
    {"library": "torchao", "scheme": "int8-dynamic"},
    {"library": "torchao", "scheme": "int4-weight-only", "group_size": 32},
    {"library": "torchao", "scheme": "int4-weight-only", "group_size": 128},
    *({"library": "hqq", "weight_bits": bits} for bits in (1, 2, 3, 4, 8)),
    {"library": "hqq", "weight_bits": 4, "group_size": None},
    {"library": "hqq", "weight_bits": 4, "axis": 0},
    {"library": "bnb", "scheme": "int8"},
    {"library": "bnb", "scheme": "nf4"},
    {"library": "bnb", "scheme": "fp4", "blocksize": 128},
    {"library": "bnb", "scheme": "nf4", "double_quant": True, "compute_dtype": "bf16"},
    *({"library": "quanto", "weights": w} for w in ("int8", "int4", "int2", "float8")),
    {"library": "quanto", "weights": "int8", "activations": "int8"},
    {"library": "quanto", "weights": "float8", "activations": "float8"},
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small ops, one thread


@pytest.fixture(scope="module")
def whisper() -> WhisperForConditionalGeneration:
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=100,
        num_mel_bins=80,
        d_model=128,  # divisible by every group size under test
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_source_positions=MEL_FRAMES // 2,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config.max_length = None  # max_new_tokens decides
    return model


@pytest.fixture(scope="module")
def whisper_window() -> tuple[WhisperForConditionalGeneration, object]:
    """A small random Whisper that takes the real processor's 30 s window, with tiny.en's processor."""
    from transformers import WhisperProcessor

    from workers.models import ModelConfig, transformers_dir

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=200, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=32, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config.max_length = None  # max_new_tokens decides
    path = transformers_dir(ModelConfig(name="whisper-tiny.en", packaged="whisper-tiny.en"))
    return model, WhisperProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    return torch.randn(2, 80, MEL_FRAMES, generator=torch.Generator().manual_seed(1))


def logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=torch.tensor([[1, 5, 7]] * len(features))).logits


def serialized_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def effective_weight(layer: nn.Module, in_features: int) -> torch.Tensor:
    """The weight a layer applies, read back through its forward: works for every library's layer type."""
    with torch.no_grad():
        eye = torch.eye(in_features)
        return (layer(eye) - layer(torch.zeros(1, in_features))).T


def two_passes(features: torch.Tensor):
    calls = []

    def calibrate(model: nn.Module) -> None:
        for utterance in features:
            logits(model, utterance[None])
            calls.append(1)

    return calibrate, calls


@pytest.mark.parametrize("spec", CPU_SPECS, ids=lambda spec: parse(spec).label())
def test_quantizes_whisper_on_the_cpu(spec, whisper, features):
    config = parse(spec)
    quantizer = library_for(config)
    assert quantizer.supports(CPU) is None
    selected = {name: layer.weight.detach().clone() for name, layer in selected_linears(whisper, config.modules)}
    assert "proj_out" not in selected

    model = copy.deepcopy(whisper)
    calibrate = two_passes(features)[0] if config.needs_calibration() else None
    result = quantizer.quantize(model, CPU, calibrate)

    assert result.quantized_modules == len(selected) > 0
    # the quantized layers keep the model's eval mode: libraries pick their inference kernels by it
    assert not whisper.training and not any(m.training for m in result.model.modules())
    assert result.total_params == sum(p.numel() for p in whisper.parameters())
    assert 0 < result.quantized_params < result.total_params
    assert serialized_bytes(result.model) < serialized_bytes(whisper)
    for name, original in selected.items():
        weight = effective_weight(result.model.get_submodule(name), original.shape[1])
        assert torch.isfinite(weight).all()
        assert not torch.equal(weight, original), name

    expected = logits(whisper, features)
    got = logits(result.model, features)
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    with torch.no_grad():
        tokens = result.model.generate(features, max_new_tokens=3)
    assert tokens.shape[0] == len(features) and tokens.shape[1] <= 1 + 3


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_none_baselines_only_change_dtype(dtype, whisper, features):
    config = parse({"library": "none", "dtype": dtype})
    result = library_for(config).quantize(copy.deepcopy(whisper), CPU)
    assert result.quantized_modules == 0
    size, fp32_size = serialized_bytes(result.model), serialized_bytes(whisper)
    assert size == fp32_size if dtype == "fp32" else size < fp32_size
    got = logits(result.model, features.to(next(result.model.parameters()).dtype))
    assert got.shape == logits(whisper, features).shape and torch.isfinite(got).all()


def test_int8_weights_stay_close_and_fewer_bits_stray_further(whisper):
    name, layer = next(selected_linears(whisper, Modules()))
    errors = {}
    for bits in (8, 4, 2):
        quantizer = library_for(parse({"library": "hqq", "weight_bits": bits}))
        model = quantizer.quantize(copy.deepcopy(whisper), CPU).model
        weight = effective_weight(model.get_submodule(name), layer.in_features)
        errors[bits] = ((weight - layer.weight).norm() / layer.weight.norm()).item()
    assert errors[8] < 0.02 < errors[4] < errors[2]


SUPPORT = {
    # (spec, device) -> does it run; the reasons are checked to be non-empty where it does not.
    "none": ({"library": "none"}, {CUDA: True, APPLE: True, ARM: True}),
    "torch": ({"library": "torch"}, {CUDA: False, APPLE: False, ARM: True}),
    "torchao-w8": ({"library": "torchao"}, {CUDA: True, APPLE: True, ARM: True}),
    "torchao-w8a8-dyn": ({"library": "torchao", "scheme": "int8-dynamic"}, {CUDA: True, APPLE: False, ARM: True}),
    "torchao-w4-g128": (
        {"library": "torchao", "scheme": "int4-weight-only"},
        {CUDA: True, APPLE: False, ARM: True},
    ),
    "torchao-w4-g256": (
        {"library": "torchao", "scheme": "int4-weight-only", "group_size": 256},
        {CUDA: True, APPLE: False, ARM: False, CPU: False},
    ),
    "hqq-w3-g64": ({"library": "hqq", "weight_bits": 3}, {CUDA: True, APPLE: True, ARM: True}),
    "bnb-nf4": ({"library": "bnb"}, {CUDA: True, APPLE: True, ARM: True}),
    "bnb-int8": ({"library": "bnb", "scheme": "int8"}, {CUDA: True, APPLE: True, ARM: True}),
    "quanto-w4": ({"library": "quanto", "weights": "int4"}, {CUDA: True, APPLE: True, ARM: True}),
    "quanto-wf8": ({"library": "quanto", "weights": "float8"}, {CUDA: True, APPLE: False, ARM: True}),
    "quanto-w8af8": (
        {"library": "quanto", "activations": "float8"},
        {CUDA: True, APPLE: False, ARM: True},
    ),
    # The pywhispercpp wheel is a CPU build of whisper.cpp; CTranslate2 has no Metal backend, fp16 only on CUDA.
    "ggml-q8_0": ({"library": "ggml"}, {CUDA: False, APPLE: True, ARM: True, CPU: True}),
    "ct2-int8": ({"library": "ctranslate2"}, {CUDA: True, APPLE: False, ARM: True, CPU: True}),
    "ct2-float16": ({"library": "ctranslate2", "compute_type": "float16"}, {CUDA: True, APPLE: False, CPU: False}),
}


@pytest.mark.parametrize("case", SUPPORT, ids=str)
def test_support_matrix_on_simulated_devices(case):
    spec, expected = SUPPORT[case]
    quantizer = library_for(parse(spec))
    for device, runs in expected.items():
        reason = quantizer.supports(device)
        if runs:
            assert reason is None, (device.hw_class, reason)
        else:
            assert isinstance(reason, str) and reason.strip(), device.hw_class


def test_runtimes_that_run_whisper_only_refuse_other_families_and_torch_libraries_take_every_family():
    from workers.models.families import FAMILIES

    for library in ("ggml", "ctranslate2"):
        quantizer = library_for(parse({"library": library}))
        assert quantizer.supports_family("whisper") is None
        assert quantizer.supports_family("ctc") == f"{library} runs whisper models only, not ctc"
    for library in ("none", "torch", "torchao", "hqq", "bnb", "quanto"):
        assert all(library_for(parse({"library": library})).supports_family(f) is None for f in FAMILIES)


def test_registry_covers_every_config():
    # The test plugin (tests/plugins/trials.py) adds `probe`; the product ships these (five of them exporters).
    assert set(LIBRARIES) - {"probe"} == {"none", "torch", "torchao", "hqq", "bnb", "quanto", "ptq", "ggml",
                                           "ctranslate2", "onnxruntime", "openvino", "mlx"}
    for library, quantizer in LIBRARIES.items():
        config = parse({"library": library})
        assert isinstance(config, quantizer.config_type) and isinstance(config, QuantConfig)
        assert type(library_for(config)) is quantizer
        assert config.label() and config.describe().scheme


def test_configs_and_support_do_not_import_the_libraries():
    # Spec validation and planning run on the driver: they must stay fast and quiet.
    code = (
        "import sys\n"
        "from pydantic import TypeAdapter\n"
        "from workers.device import Device\n"
        "from workers.backends import LIBRARIES, QuantizationConfig, library_for\n"
        "for library in LIBRARIES:\n"
        "    config = TypeAdapter(QuantizationConfig).validate_python({'library': library})\n"
        "    for hw in ('cuda', 'apple', 'x86-cpu', 'arm-cpu'):\n"
        "        library_for(config).supports(Device(hw))\n"
        "print(sorted(m for m in ('torchao', 'hqq', 'bitsandbytes', 'optimum.quanto') if m in sys.modules))\n"
    )
    root = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("spec", "field", "allowed"),
    [
        ({"library": "hqq", "weight_bits": 5}, "weight_bits", "1, 2, 3, 4 or 8"),
        ({"library": "hqq", "group_size": 12}, "group_size", "multiple of 8"),
        ({"library": "hqq", "axis": 2}, "axis", "0 or 1"),
        ({"library": "bnb", "blocksize": 16}, "blocksize", "32, 64, 128, 256, 512, 1024, 2048 or 4096"),
        ({"library": "bnb", "compute_dtype": "fp8"}, "compute_dtype", "'fp32', 'fp16' or 'bf16'"),
        (
            {"library": "torchao", "scheme": "int4-weight-only", "group_size": 48},
            "group_size",
            "32, 64, 128 or 256",
        ),
        ({"library": "quanto", "weights": "int3"}, "weights", "'int8', 'int4', 'int2' or 'float8'"),
        ({"library": "quanto", "activations": "int4"}, "activations", "'none', 'int8' or 'float8'"),
        ({"library": "hqq", "weight_bits": 4, "nbits": 4}, "nbits", "Extra inputs are not permitted"),
        ({"library": "bnb", "modules": {"only": ["*fc1"]}}, "only", "Extra inputs are not permitted"),
    ],
)
def test_rejects_bad_knobs_naming_the_field_and_allowed_values(spec, field, allowed):
    with pytest.raises(ValidationError) as error:
        parse(spec)
    assert field in str(error.value) and allowed in str(error.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"library": "bnb", "scheme": "int8", "blocksize": 128}, "blocksize: only for nf4/fp4"),
        ({"library": "bnb", "scheme": "nf4", "threshold": 3.0}, "threshold: only for int8"),
        ({"library": "torchao", "group_size": 64}, "group_size: only for int4-weight-only"),
        ({"library": "quanto", "calibration_utterances": 4}, "calibration_utterances: only when activations"),
        ({"library": "jax"}, "does not match any of the expected tags"),
    ],
)
def test_rejects_knobs_that_do_not_apply_to_the_scheme(spec, message):
    with pytest.raises(ValidationError, match=message):
        parse(spec)


def test_spec_names_round_trip():
    config = parse({"library": "hqq", "weight_bits": 3, "group_size": None, "compute_dtype": "bf16"})
    described = config.describe()
    assert (described.weight_bits, described.group_size, described.granularity) == (3, None, "per-channel")
    assert described.compute_dtype == "bfloat16" and config.label() == "hqq-w3-pc-bf16"
    assert parse(config.model_dump()) == config
    assert {"weight_bits", "group_size", "compute_dtype"} <= set(config.model_dump())


@pytest.mark.parametrize("library", ["torchao", "hqq", "bnb", "quanto", "torch"])
def test_include_patterns_select_only_the_named_layers(library, whisper):
    config = parse({"library": library, "modules": {"include": ["*fc1"]}})
    model = copy.deepcopy(whisper)
    result = library_for(config).quantize(model, CPU)
    fc1 = [name for name, _ in whisper.named_modules() if name.endswith("fc1")]
    assert result.quantized_modules == len(fc1) == 4
    untouched = [name for name, m in whisper.named_modules() if isinstance(m, nn.Linear) and name not in fc1]
    for name in untouched:
        layer = model.get_submodule(name)
        assert type(layer) is nn.Linear and type(layer.weight) is nn.Parameter, name


def test_exclude_patterns_keep_layers_out(whisper):
    config = parse({"library": "hqq", "modules": {"exclude": ["proj_out", "model.encoder.*"]}})
    result = library_for(config).quantize(copy.deepcopy(whisper), CPU)
    linears = [n for n, m in whisper.named_modules() if isinstance(m, nn.Linear)]
    assert result.quantized_modules == len([n for n in linears if n.startswith("model.decoder.")]) == 20
    encoder = [n for n in linears if n.startswith("model.encoder.")]
    assert len(encoder) == 12 and all(type(result.model.get_submodule(n)) is nn.Linear for n in encoder)


def test_quanto_static_activations_take_their_scales_from_calibration(whisper, features):
    from optimum.quanto import QLayerNorm, QModuleMixin

    config = parse({"library": "quanto", "weights": "int8", "activations": "int8"})
    assert config.needs_calibration() and config.describe().dynamic is False
    assert (config.calibration_dataset, config.calibration_utterances) == ("samples-calibration", 8)
    calibrate, calls = two_passes(features)
    model = library_for(config).quantize(copy.deepcopy(whisper), CPU, calibrate).model

    assert len(calls) == 2
    qmodules = [m for m in model.modules() if isinstance(m, QModuleMixin)]
    # the 32 selected Linears and the 12 LayerNorms, as quanto's own `quantize` with activations takes them
    assert len(qmodules) == 32 + 12
    assert sum(isinstance(m, QLayerNorm) for m in qmodules) == 12
    for module in qmodules:
        assert module.input_scale.item() != 1.0 and module.output_scale.item() != 1.0


def test_quanto_static_activations_without_calibrate_fail(whisper):
    quantizer = library_for(parse({"library": "quanto", "activations": "int8"}))
    with pytest.raises(ValueError, match="calibrate"):
        quantizer.quantize(copy.deepcopy(whisper), CPU)


def test_quanto_static_trial_is_the_library_called_directly(whisper_window, tmp_path):
    """The trial's quanto w8a8 model is what optimum-quanto's own calls make of the same model and clips
    (`quantize` with its default module kinds, `Calibration` over the calibration split in its order, `freeze`):
    the same quantized modules, the same static scales, and the same transcripts through the trial."""
    from optimum.quanto import Calibration, QModuleMixin, freeze, quantize

    from sweep.plan import expand
    from sweep.spec import parse_spec
    from workers.hardware import probe
    from workers.models import LoadedModel
    from workers.trial import WorkerCache, run_trial

    model, processor = whisper_window
    hardware = probe()
    spec = parse_spec({
        "sweep": "quanto-direct", "results": str(tmp_path),
        "models": [{"name": "tiny-random", "packaged": "whisper-tiny.en"}],
        "quantization": [{"library": "quanto", "weights": "int8", "activations": "int8",
                          "calibration_utterances": 3}],
        "datasets": [{"name": "samples", "source": "samples", "max_utterances": 3}],
        "hardware": ["local"], "eval": {"threads": 1, "max_new_tokens": MAX_NEW_TOKENS},
    })
    (trial,) = expand(spec, hardware.hw_class).trials
    cache = WorkerCache()
    cache.models[trial.model] = LoadedModel(model, processor, "whisper", "random", 0.0)
    cache.baseline_bytes[trial.model] = serialized_bytes(model)
    outcome = run_trial(trial, hardware, cache)
    assert outcome.status == "ok", outcome.row.get("error")
    trial_model = cache.last_quantized[1].deployable.model

    calibration = [u for u in cache.utterances(trial.calibration) if u.audio is not None]
    clips = [u for u in cache.utterances(trial.dataset) if u.audio is not None]
    assert len(calibration) == 3 and len(clips) == 3

    def generate(m: nn.Module, audio) -> torch.Tensor:
        features = processor(audio, sampling_rate=16_000, return_tensors="pt").input_features
        return m.generate(features, max_new_tokens=MAX_NEW_TOKENS)

    direct = copy.deepcopy(model)
    quantize(direct, weights="qint8", activations="qint8", exclude=["proj_out"])
    with torch.no_grad():
        with Calibration():
            for u in calibration:
                generate(direct, u.audio)
        freeze(direct)
        direct_texts = {u.utt_id: processor.batch_decode(generate(direct, u.audio), skip_special_tokens=True)[0].strip()
                        for u in clips}

    def quantized(m: nn.Module) -> dict[str, tuple]:
        return {name: (type(q).__name__, q.input_scale.item(), q.output_scale.item(), "output" in q._quantize_hooks)
                for name, q in m.named_modules() if isinstance(q, QModuleMixin)}

    assert quantized(trial_model) == quantized(direct)
    assert sum(kind == "QLayerNorm" for kind, *_ in quantized(direct).values()) == 12  # the library's default
    trial_texts = {u["utt_id"]: u["hypothesis"] for u in outcome.utterances}
    assert trial_texts == direct_texts and all(direct_texts.values())
