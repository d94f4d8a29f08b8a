"""Backend `torch`: libraries that quantize a torch module in place (torch.ao, torchao, HQQ, bitsandbytes,
optimum-quanto, simulated PTQ, and `none` for the float baselines), run by the family's transformers code."""
from __future__ import annotations

from workers.backends.torch.bnb import BnbQuantizer
from workers.backends.torch.dynamic import TorchQuantizer
from workers.backends.torch.hqq import HqqQuantizer
from workers.backends.torch.none import NoneQuantizer
from workers.backends.torch.ptq import PtqQuantizer
from workers.backends.torch.quanto import QuantoQuantizer
from workers.backends.torch.runtime import TorchRuntime
from workers.backends.torch.torchao import TorchaoQuantizer

LIBRARIES = (NoneQuantizer, TorchQuantizer, TorchaoQuantizer, HqqQuantizer, BnbQuantizer, QuantoQuantizer, PtqQuantizer)
RUNTIMES = (TorchRuntime(),)
