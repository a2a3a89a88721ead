"""Never run the frozen backbone twice: a token cache on disk, read by many probes.

``key`` names a cache by every input that changes its tokens; ``store`` extracts, resumes and memory-maps it;
``layout`` says which layers and tokens a cache or stream holds and cuts each probe's view; ``streams`` hands
batches of tokens (cached or live) to whatever trains on them (``training.grid`` trains many probes at once);
``features`` turns cached tokens into global features for k-NN; ``location`` says where caches live, ``listing``
lists and deletes them (``python -m hf_efficient_probing.cache``) and ``plan`` prices an extraction before it runs.
Nothing here imports ``training`` or ``hub``.
"""

from .key import TokenCacheKey, backbone_identity, dataset_fingerprint, preprocessing_description, weights_fingerprint
from .store import CorruptCacheError, TokenCache, TokenCacheDataset, cache_tokens_for_model, extract_tokens

__all__ = [
    "CorruptCacheError",
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
