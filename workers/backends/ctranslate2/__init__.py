"""Backend `ctranslate2`: CTranslate2's converter and quantizer, run by `ctranslate2.models.Whisper`."""
from __future__ import annotations

from workers.backends.ctranslate2.export import CTranslate2Exporter
from workers.backends.ctranslate2.runtime import CTranslate2Runtime

LIBRARIES = (CTranslate2Exporter,)
RUNTIMES = (CTranslate2Runtime(),)
