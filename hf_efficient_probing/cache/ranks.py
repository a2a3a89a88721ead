"""The processes that fill one token cache together, and every wait between them.

Every process of a run extracts into one cache on a file system all of them share; with ``per_node`` the processes
of each node extract the whole set into that node's own cache root, and wait only for each other. Each wait has a
timeout (:func:`default_rank_timeout`: ``$HF_PROBING_RANK_TIMEOUT`` seconds, 30 minutes by default) and fails with the
ranks it waited for: barriers are ``torch.distributed.monitored_barrier`` on a gloo group (the run's own group when it
is gloo, else a gloo group beside it), which names the ranks that did not arrive, where a plain barrier would hang.
"""

from __future__ import annotations

import datetime
import os

import torch

RANK_TIMEOUT_ENV = "HF_PROBING_RANK_TIMEOUT"
DEFAULT_RANK_TIMEOUT_SECONDS = 1800.0
SHARED_ROOT_ADVICE = (
    "every process writes its own shards and the main process merges them, so the cache root (--token_cache_dir, "
    "$HF_PROBING_TOKEN_CACHE) must be a file system every node shares; or pass --cache_per_node "
    "(ExtractionOptions(cache_per_node=True)) so that each node extracts the whole set into its own cache root"
)


class CacheRootNotSharedError(RuntimeError):
    """The processes filling one token cache do not see each other's files: their cache roots are not shared."""


_gloo_groups: dict[bool, object] = {}  # per_node -> this process's gloo group, made once by every rank together


def default_rank_timeout() -> float:
    """The longest one process waits for another: ``$HF_PROBING_RANK_TIMEOUT`` seconds, else 30 minutes."""
    value = os.environ.get(RANK_TIMEOUT_ENV)
    if value is None:
        return DEFAULT_RANK_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{RANK_TIMEOUT_ENV}={value!r}: give a positive number of seconds.")
    return seconds


def process_slot(per_node: bool = False) -> tuple[int, int]:
    """``(rank, world size)`` of this process among those extracting into one cache: every process of the run, or
    with ``per_node`` those of this node (``LOCAL_RANK`` of ``LOCAL_WORLD_SIZE``).

    Under ``accelerate launch``/``torchrun`` (``WORLD_SIZE`` > 1) accelerate's ``PartialState`` joins, or reuses,
    the process group, so a caller simply calls the extraction on every rank; a plain process is ``(0, 1)``. The
    first call of a distributed run makes the gloo group the waits run on, so every rank must make it, as the
    extraction's first step does."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return 0, 1
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    group = _gloo_group(per_node)
    return torch.distributed.get_rank(group), torch.distributed.get_world_size(group)


def _gloo_group(per_node: bool):
    if per_node not in _gloo_groups:
        if per_node:
            if "LOCAL_WORLD_SIZE" not in os.environ:
                raise ValueError(
                    "cache_per_node needs LOCAL_WORLD_SIZE, the number of processes on each node: start the run with "
                    "accelerate launch or torchrun, which set it."
                )
            size = int(os.environ["LOCAL_WORLD_SIZE"])
            # torchrun and accelerate number the ranks node by node, so a node's ranks are consecutive
            _gloo_groups[per_node], _ = torch.distributed.new_subgroups(group_size=size, backend="gloo")
        elif torch.distributed.get_backend() == "gloo":
            _gloo_groups[per_node] = torch.distributed.group.WORLD
        else:
            _gloo_groups[per_node] = torch.distributed.new_group(backend="gloo")
    return _gloo_groups[per_node]


def wait_for_everyone(
    world_size: int, timeout_seconds: float | None = None, waiting_at: str = "the token cache", per_node: bool = False
) -> None:
    """Wait until every process extracting into this cache (see :func:`process_slot`) gets here; after
    ``timeout_seconds`` (default :func:`default_rank_timeout`) fail with the ranks that did not."""
    if world_size == 1:
        return
    timeout = default_rank_timeout() if timeout_seconds is None else timeout_seconds
    group = _gloo_group(per_node)
    try:
        torch.distributed.monitored_barrier(group, datetime.timedelta(seconds=timeout), wait_all_ranks=True)
    except RuntimeError as error:
        rank = torch.distributed.get_rank(group)
        waited_for = "the others (rank 0 names them)" if rank else "the ranks named here"
        raise TimeoutError(
            f"Rank {rank} waited {timeout:.0f} s at {waiting_at} for {waited_for}: {error}. If a process died, run "
            f"the same command again (the extraction resumes); if one is slow, raise {RANK_TIMEOUT_ENV} (seconds)."
        ) from error


def gather_from_everyone(value, world_size: int, per_node: bool = False) -> list:
    """``value`` of every process extracting into this cache, by rank (call after :func:`wait_for_everyone`, so
    that no process waits here without a timeout)."""
    if world_size == 1:
        return [value]
    values = [None] * world_size
    torch.distributed.all_gather_object(values, value, group=_gloo_group(per_node))
    return values
