"""Waits between the processes that fill one token cache: each has a timeout whose error names the rank waited for,
and processes that do not share the cache root fail at once, saying so, instead of waiting for each other."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_cache import Images, make_key, run, single_thread, tiny_backbone  # noqa: F401  (the workers' one thread)
from test_training_end_to_end import _env

from hf_efficient_probing.backbones import TokenReader
from hf_efficient_probing.cache import ExtractionOptions, ExtractionPlan, TokenCache
from hf_efficient_probing.cache.extraction import merge_manifest, ranks_still_unseen
from hf_efficient_probing.cache.manifest import RANK_RECORDS_PATTERN, unseen_rank_records, write_json
from hf_efficient_probing.cache.ranks import RANK_TIMEOUT_ENV, default_rank_timeout
from hf_efficient_probing.training import DataArguments, ProbeArguments
from hf_efficient_probing.training.job import check_arguments

HERE = Path(__file__).parent


def run_ranks(tmp_path: Path, scenario: str, roots: list[Path], **env) -> list[dict]:
    """Start one ``ranks_worker.py`` process per root (rank r extracts into ``roots[r]``), wait, and return what
    each rank reported."""
    reports = [tmp_path / f"report-{rank}.json" for rank in range(len(roots))]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "ranks_worker.py"),
                scenario,
                str(rank),
                str(len(roots)),
                str(tmp_path / "init"),
                str(root),
                str(report),
            ],
            env={**_env(), **env},
        )  # fmt: skip
        for rank, (root, report) in enumerate(zip(roots, reports, strict=True))
    ]
    try:
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return [json.loads(report.read_text()) for report in reports]


def test_rank_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(RANK_TIMEOUT_ENV, raising=False)
    assert default_rank_timeout() == 1800 and ExtractionOptions().timeout_seconds == 1800
    monkeypatch.setenv(RANK_TIMEOUT_ENV, "7.5")
    assert ExtractionOptions().timeout_seconds == 7.5
    for wrong in ("soon", "0", "-3"):
        monkeypatch.setenv(RANK_TIMEOUT_ENV, wrong)
        with pytest.raises(ValueError, match=RANK_TIMEOUT_ENV):
            default_rank_timeout()


@pytest.mark.slow
def test_a_barrier_names_the_rank_that_never_arrives(tmp_path):
    """Rank 1 is alive but never reaches the barrier (it waits for rank 0's report): rank 0 fails after its 2 s,
    naming rank 1, instead of hanging until rank 1 leaves (then neither would report and the test would time out)."""
    waiting, _ = run_ranks(tmp_path, "absent", [tmp_path, tmp_path])
    assert waiting["error"] == "TimeoutError", waiting
    assert "Rank 0 waited 2 s at the test's barrier" in waiting["message"]
    assert "Ranks 1 failed to pass monitoredBarrier" in waiting["message"], waiting["message"]
    assert RANK_TIMEOUT_ENV in waiting["message"]


def test_the_merge_names_the_ranks_it_waits_for(tmp_path):
    """The main process waits for every rank's record file to say it finished: after the timeout it names rank 1."""
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [1, -1], token_selection="all")
    options = ExtractionOptions(tmp_path, timeout_seconds=0.2)
    plan = ExtractionPlan(backbone, reader, range(12), make_key(backbone, reader), options)
    plan.directory.mkdir()
    key_dict = plan.key_dict
    write_json(plan.directory / RANK_RECORDS_PATTERN.format(0), {"key": key_dict, "shards": [], "run": {}})
    write_json(plan.directory / RANK_RECORDS_PATTERN.format(1), {"key": key_dict, "shards": []})
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"Waited 0 s for ranks \[1\] to finish their shards") as error:
        merge_manifest(plan, shard_size=3, num_shards=4, world_size=2)
    assert "--cache_per_node" in str(error.value) and time.monotonic() - started < 5


def test_record_files_of_another_run_or_none_are_unseen(tmp_path):
    write_json(tmp_path / RANK_RECORDS_PATTERN.format(0), {"run_id": "a"})
    write_json(tmp_path / RANK_RECORDS_PATTERN.format(1), {"run_id": "an earlier run"})
    assert unseen_rank_records(tmp_path, ["a", "b", "c"]) == [1, 2]
    assert unseen_rank_records(tmp_path, ["a"]) == []


def test_a_record_file_that_appears_late_is_seen(tmp_path):
    """A shared file system may show another node's new file seconds late: the check looks again before it fails."""
    write_json(tmp_path / RANK_RECORDS_PATTERN.format(0), {"run_id": "a"})
    late = threading.Timer(0.3, write_json, (tmp_path / RANK_RECORDS_PATTERN.format(1), {"run_id": "b"}))
    late.start()
    try:
        assert ranks_still_unseen(tmp_path, ["a", "b"], grace_seconds=30, poll_seconds=0.05) == []
    finally:
        late.join()
    assert ranks_still_unseen(tmp_path, ["a", "b", "c"], grace_seconds=0.2, poll_seconds=0.05) == [2]


@pytest.mark.slow
def test_ranks_with_different_cache_roots_fail_at_once_naming_the_unseen_rank(tmp_path):
    """Two processes of one run, each with its own cache root and no cache_per_node (two nodes without a shared
    file system): each fails at the start, naming the other's shards and the two ways out, long before the 60 s
    the merge would wait."""
    roots = [tmp_path / "node0", tmp_path / "node1"]
    reports = run_ranks(tmp_path, "extract", roots, **{RANK_TIMEOUT_ENV: "60"})
    for rank, report in enumerate(reports):
        assert report["error"] == "CacheRootNotSharedError", report
        assert f"Rank {rank} cannot see the shards of ranks [{1 - rank}]" in report["message"]
        assert "file system every node shares" in report["message"] and "--cache_per_node" in report["message"]
        assert report["seconds"] < 30


@pytest.mark.slow
def test_ranks_that_disagree_on_a_complete_cache_fail_at_once(tmp_path):
    """Node 0's root already holds the complete cache, node 1's does not: rather than rank 0 reusing it while rank 1
    waits at the extraction's barriers, both fail at the start, saying which ranks see it."""
    roots = [tmp_path / "node0", tmp_path / "node1"]
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [1, -1], token_selection="all")
    run(backbone, reader, make_key(backbone, reader), roots[0], images=Images(8), batch_size=2, shard_size=2)
    for report in run_ranks(tmp_path, "extract", roots, **{RANK_TIMEOUT_ENV: "60"}):
        assert report["error"] == "CacheRootNotSharedError", report
        assert "Ranks [0] see a complete token cache" in report["message"] and "ranks [1] do not" in report["message"]
        assert "--cache_per_node" in report["message"] and report["seconds"] < 30


@pytest.mark.slow
def test_cache_per_node_fills_each_nodes_root_with_the_one_process_cache(tmp_path):
    """Two nodes of one process each (LOCAL_WORLD_SIZE 1), each with its own root: each node extracts every row
    into its root, and each root's manifest lists the very shards (same files, rows and SHA-256) one process writes."""
    roots = [tmp_path / "node0", tmp_path / "node1"]
    for report in run_ranks(tmp_path, "extract-per-node", roots, LOCAL_WORLD_SIZE="1", **{RANK_TIMEOUT_ENV: "60"}):
        assert report["error"] is None, report
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [1, -1], token_selection="all")
    one = run(
        backbone, reader, make_key(backbone, reader), tmp_path / "one", images=Images(8), batch_size=2, shard_size=2
    )
    for root in roots:
        node = TokenCache(root / one.directory.name)
        assert node.manifest["shards"] == one.manifest["shards"] and len(one.manifest["shards"]) == 4
        assert node.manifest["extraction"]["images_per_process"] == [8], "each node extracts the whole set"
        node.verify()


def test_cache_per_node_needs_the_processes_per_node_and_a_cached_run(monkeypatch):
    from hf_efficient_probing.cache import ranks

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(ranks, "_gloo_groups", {})
    with pytest.raises(ValueError, match="cache_per_node needs LOCAL_WORLD_SIZE"):
        ranks._gloo_group(per_node=True)
    check_arguments(DataArguments(cache_per_node=True), ProbeArguments())  # the default protocol caches
    with pytest.raises(ValueError, match="--cache_per_node places the token cache, but this run trains live"):
        check_arguments(DataArguments(cache_per_node=True, use_token_cache=False), ProbeArguments())
