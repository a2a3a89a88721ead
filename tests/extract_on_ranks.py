"""Run by ``accelerate launch`` in tests/test_cache_distributed.py: every rank calls the same extraction.

extract_on_ranks.py CACHE_ROOT DELAY_SECONDS
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import test_cache  # noqa: E402

if __name__ == "__main__":
    root, delay = sys.argv[1], float(sys.argv[2])
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / f"pid-{os.environ['RANK']}").write_text(str(os.getpid()))
    test_cache.extract(root, delay=delay, shard_size=2, num_rows=12)
