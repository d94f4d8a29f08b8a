"""Isolation room, fork server's preload: what every isolated child starts with (imports only, no state)."""
import numpy  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
