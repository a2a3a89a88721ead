"""Where token caches live: under the Hugging Face cache home, as `datasets` keeps its cache, never the current
directory."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants

CACHE_ENV = "HF_PROBING_TOKEN_CACHE"


def default_cache_root() -> Path:
    """``$HF_PROBING_TOKEN_CACHE`` if set, else ``$HF_HOME/hf_efficient_probing/token-cache``
    (``~/.cache/huggingface/hf_efficient_probing/token-cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(constants.HF_HOME) / "hf_efficient_probing" / "token-cache"
