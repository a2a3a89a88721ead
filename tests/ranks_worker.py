"""One of the processes of tests/test_cache_ranks.py: joins a gloo group of ``WORLD`` processes, runs ``SCENARIO``
and writes what happened (the error's type and message, the seconds it took) to ``REPORT``.

ranks_worker.py SCENARIO RANK WORLD INIT_FILE CACHE_ROOT REPORT

Scenarios: ``absent`` (rank 0 waits at a barrier rank 1 never reaches), ``extract`` (every rank extracts the tiny
cache of tests/test_cache.py into CACHE_ROOT, which the test may make differ by rank) and ``extract-per-node`` (the
same with ``cache_per_node``; the test sets ``LOCAL_WORLD_SIZE``).
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import test_cache  # noqa: E402  (imported before the clock starts)

from hf_efficient_probing.cache.ranks import wait_for_everyone  # noqa: E402


def run(scenario: str, rank: int, world: int, root: str, report: Path) -> None:
    if scenario == "absent":
        if rank == 0:
            wait_for_everyone(world, timeout_seconds=2, waiting_at="the test's barrier")
        else:  # alive, never at the barrier, until rank 0 has reported: a barrier that hangs hangs the test
            waited_for = report.with_name("report-0.json")
            deadline = time.monotonic() + 100
            while not waited_for.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    else:
        backbone = test_cache.tiny_backbone("vit")
        reader = test_cache.TokenReader(backbone.config, [1, -1], token_selection="all")
        key = test_cache.make_key(backbone, reader)
        options = dict(batch_size=2, shard_size=2, cache_per_node=scenario == "extract-per-node")
        test_cache.run(backbone, reader, key, root, images=test_cache.Images(8), **options)


if __name__ == "__main__":
    scenario, rank, world, init_file, root, report = sys.argv[1:]
    rank, world = int(rank), int(world)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    started, outcome = time.monotonic(), {"error": None, "message": ""}
    try:
        run(scenario, rank, world, root, Path(report))
    except Exception as error:  # the test reads which error each rank got
        outcome = {"error": type(error).__name__, "message": str(error)}
    outcome["seconds"] = time.monotonic() - started
    Path(report).write_text(json.dumps(outcome))
