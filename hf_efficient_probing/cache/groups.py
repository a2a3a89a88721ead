"""Which layer groups of a source are on disk, and which of them serve a reader.

A *source* is one backbone pass over one split (every key field but the layers, `key.TokenCacheKey.source_fingerprint`);
a *layer group* is one cache directory of it, ``<source>-layers-<l1>-<l2>``, holding every token of the layers one
extraction read. A reader's layers come from the complete groups that hold them; the layers none holds are extracted
in one pass, as one new group (`cache.extraction.extract_for_reader`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .key import LAYERS_MARK, TokenCacheKey
from .manifest import MANIFEST_NAME, read_json


def complete_layer_groups(cache_root: Path, key: TokenCacheKey) -> list[tuple[int, ...]]:
    """The layers of every complete group of ``key``'s source under ``cache_root``, in name order: each a directory
    whose manifest is complete and records ``key`` with those layers (a directory of another key is ignored)."""
    groups = []
    for directory in sorted(cache_root.glob(f"{key.source_fingerprint}{LAYERS_MARK}*")):
        manifest = read_json(directory / MANIFEST_NAME)
        if not manifest.get("complete"):
            continue
        layers = tuple(manifest["key"]["feature_layers"])
        if manifest["key"] == _as_stored(key.with_layers(layers)):
            groups.append(layers)
    return groups


def _as_stored(key: TokenCacheKey) -> dict:
    return json.loads(json.dumps(key.to_dict()))  # tuples become lists, as the manifest stores them


def cover_layers(
    wanted: Sequence[int], groups: Sequence[tuple[int, ...]]
) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """``(groups to read, layers to extract)``: fewest groups first (the one holding most of the layers still
    needed, the earlier on a tie), then the wanted layers none holds, in ascending order."""
    needed, chosen = sorted(set(wanted)), []
    while True:
        best = max(groups, key=lambda group: sum(layer in group for layer in needed), default=None)
        if best is None or not any(layer in best for layer in needed):
            return chosen, tuple(needed)
        chosen.append(best)
        needed = [layer for layer in needed if layer not in best]
