"""Isolation room, fork server's preload: what every isolated child starts with (imports only, no state).

The trial code itself is imported here, once per fork server, rather than in every child; quantization
libraries are not (most trials need one of them, and the libraries load lazily).
"""
import numpy  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import workers.trial  # noqa: F401
