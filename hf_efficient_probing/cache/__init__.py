"""Never run the frozen backbone twice: a token cache on disk, read by many probes.

``key`` names a cache by every input that changes what it holds; ``manifest`` records its shards and checks them;
``extraction`` fills it on every process, resumably (one ``ExtractionPlan``); ``dataset`` opens a complete cache and
memory-maps its rows; ``layout`` says which layers and tokens a cache (or a live batch) holds and cuts each probe's
view; ``features`` turns cached tokens into global features for k-NN; ``location`` says where caches live, ``listing`` lists and deletes them
(``python -m hf_efficient_probing.cache``) and ``plan`` prices an extraction before it runs. Storage only: nothing
here imports ``training``, the models or ``hub``.
"""

from .dataset import TokenCache, TokenCacheDataset
from .extraction import ExtractionOptions, ExtractionPlan, cache_tokens_for_model, extract_tokens
from .key import (
    CachedSplit,
    TokenCacheKey,
    backbone_identity,
    dataset_fingerprint,
    preprocessing_description,
    weights_fingerprint,
)
from .manifest import CorruptCacheError

__all__ = [
    "CachedSplit",
    "CorruptCacheError",
    "ExtractionOptions",
    "ExtractionPlan",
    "TokenCache",
    "TokenCacheDataset",
    "TokenCacheKey",
    "backbone_identity",
    "cache_tokens_for_model",
    "dataset_fingerprint",
    "extract_tokens",
    "preprocessing_description",
    "weights_fingerprint",
]
