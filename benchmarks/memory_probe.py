"""Train an EP probe for one epoch from a token cache and print its peak memory as JSON (run in a fresh process).

Peak anonymous memory (``RssAnon``: what the process allocates) is sampled every few milliseconds; peak resident
memory (``VmHWM``) also counts the pages of the memory-mapped shards that were read, which the kernel can drop.

    python benchmarks/memory_probe.py CACHE_DIR
"""

from __future__ import annotations

import json
import sys
import threading
import time

from transformers import ViTConfig

import hf_efficient_probing as hep
from hf_efficient_probing.cache import TokenCache
from hf_efficient_probing.cache.multiprobe import ProbeSpec, train_probes
from hf_efficient_probing.cache.streams import CachedTokens


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakAnon(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = status_kib("RssAnon"), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, status_kib("RssAnon"))
            time.sleep(0.002)


def main(cache_dir: str) -> None:
    cache = TokenCache(cache_dir)
    stream = CachedTokens(cache)
    config = ViTConfig(**json.loads(cache.key["backbone_config"]))
    spec = ProbeSpec("ep", hep.EfficientProbingConfig(backbone_config=config, num_labels=10, num_queries=32), 1e-3)
    baseline = status_kib("RssAnon")
    sampler = PeakAnon()
    sampler.start()
    train_probes([spec], None, stream, epochs=1, batch_size=32)
    sampler.running = False
    sampler.join()
    print(
        json.dumps(
            {
                "rows": len(stream),
                "baseline_anon_kib": baseline,
                "peak_anon_kib": sampler.peak,
                "peak_rss_kib": status_kib("VmHWM"),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
