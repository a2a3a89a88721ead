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

import torch
from transformers import ViTConfig

import hf_efficient_probing as hep
from hf_efficient_probing.backbones import build_backbone
from hf_efficient_probing.cache import TokenCache, TokenCacheDataset


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
    rows = TokenCacheDataset(cache, token_selection="patch")  # what the EP probe below reads
    config = ViTConfig(**json.loads(cache.key["backbone_config"]))
    with torch.device("meta"):  # the cached tokens replace the backbone: its weights need no memory
        backbone = build_backbone(config)
    probe_config = hep.EfficientProbingConfig(backbone_config=config, num_labels=10, num_queries=32)
    model = hep.VisionModelForEfficientProbing(probe_config, backbone=backbone).train()
    optimizer = torch.optim.AdamW([p for p in model.probe.parameters() if p.requires_grad], lr=1e-3)
    baseline = status_kib("RssAnon")
    sampler = PeakAnon()
    sampler.start()
    for batch in torch.utils.data.DataLoader(rows, batch_size=32, shuffle=True):
        model(tokens=batch["tokens"], labels=batch["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    sampler.running = False
    sampler.join()
    print(
        json.dumps(
            {
                "rows": len(rows),
                "baseline_anon_kib": baseline,
                "peak_anon_kib": sampler.peak,
                "peak_rss_kib": status_kib("VmHWM"),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
