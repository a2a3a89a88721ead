"""Never run the frozen backbone twice: a token cache on disk, read by many probes.

``key`` names a cache by every input that changes what it holds; ``manifest`` records its shards and checks them;
``extraction`` fills it on every process, resumably (one ``ExtractionPlan``), and ``streaming`` from a stream, each
process its own part; ``ranks`` says which processes fill one cache together (all, or each node's) and times every
wait between them; ``dataset`` opens complete caches and
memory-maps their rows; ``groups`` finds the caches of one backbone pass and picks those that serve a reader;
``layout`` says which layers and tokens a live batch holds and cuts each probe's view; ``features`` turns cached tokens
into global features for k-NN; ``location`` says where caches live, ``listing`` lists and deletes them
(``python -m hf_efficient_probing.cache``) and ``plan`` prices an extraction before it runs. Storage only: nothing
here imports ``training``, the models or ``hub``.

One backbone pass serves every reader. A cache stores *every* token of its layers ([CLS] + patches), so patch-token
probes, [CLS] probes, all-token probes and GAP/[CLS] k-NN features of those layers are rows of it, sliced on read, and
its key has no token selection. Caches are *layer groups*: one directory per extraction, holding the layers that
extraction read, each layer its own tensor in a shard (``tokens.<layer>``), named ``<source>-layers-<l1>-<l2>`` where
the source hashes everything but the layers. A later run reads the layers it shares with earlier groups from them and
extracts only the others, as one new group. One directory per *group* rather than per *layer*: a pass over the
images is the unit that writes, resumes after a kill and is verified, and it stays one directory with one manifest
and one set of rank records, however many layers it reads; one tensor per layer inside the shards still lets a
reader of one layer page in that layer's bytes only.
"""

from .dataset import TokenCache, TokenCacheDataset, TokenCacheView
from .extraction import (
    ExtractionOptions,
    ExtractionPlan,
    cache_tokens_for_model,
    extract_for_reader,
    extract_tokens,
)
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
    "TokenCacheView",
    "backbone_identity",
    "cache_tokens_for_model",
    "extract_for_reader",
    "dataset_fingerprint",
    "extract_tokens",
    "preprocessing_description",
    "weights_fingerprint",
]
