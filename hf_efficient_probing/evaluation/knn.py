"""k-NN classification of frozen features (nothing trained), as the official benchmark runs it.

Each image is one global feature ([CLS] or the mean of the patch tokens, GAP), L2-normalised. A test image's k
nearest training features (cosine similarity) vote for their class with weight ``exp(sim / T)``; the sweep over
``k`` and ``T`` reports top-1/top-5 for every pair, and :func:`select_knn` chooses the pair on a split held out from
train before it classifies the evaluation split once with it. :func:`knn_classify` works on feature tensors only,
so features from a token cache feed it as well as features computed here; it walks the test set in chunks and the
training bank in blocks, keeping a running top-k, so it never holds more than ``test_chunk x train_block``
similarities.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

DEFAULT_KS = (5, 10, 20, 50, 100, 200)
DEFAULT_TEMPERATURES = (0.07,)


@torch.no_grad()
def nearest_neighbors(
    train_features: torch.Tensor, test_features: torch.Tensor, k: int, train_block: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(similarities, indices)`` ``[M, k]`` of the ``k`` most similar rows of ``train_features`` for each row of
    ``test_features`` (both already normalised), best first, computed block by block over the training bank."""
    k = min(k, train_features.shape[0])
    best_sim = test_features.new_empty(test_features.shape[0], 0)
    best_idx = torch.empty(test_features.shape[0], 0, dtype=torch.long, device=test_features.device)
    for start in range(0, train_features.shape[0], train_block):
        block = train_features[start : start + train_block]
        sim, idx = (test_features @ block.T).topk(min(k, block.shape[0]), dim=1)
        best_sim, order = torch.cat([best_sim, sim], dim=1).topk(min(k, best_sim.shape[1] + sim.shape[1]), dim=1)
        best_idx = torch.cat([best_idx, idx + start], dim=1).gather(1, order)
    return best_sim, best_idx


@torch.no_grad()
def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    test_chunk: int = 256,
    train_block: int = 65536,
) -> list[dict]:
    """Weighted k-NN accuracy for every ``(k, T)``: a list of ``{"k", "temperature", "top1", "top5"}`` (fractions).

    Args:
        train_features: ``[N, D]`` features of the training images (normalised here).
        train_labels: ``[N]`` class indices.
        test_features, test_labels: ``[M, D]`` and ``[M]``.
        num_classes: number of classes (default: the largest label + 1).
        ks: numbers of neighbours; values above ``N`` use all ``N``.
        temperatures: vote temperatures ``T`` in ``exp(sim / T)``.
        test_chunk, train_block: memory bounds: at most ``test_chunk x train_block`` similarities at a time.
    """
    if train_features.shape[0] == 0 or test_features.shape[0] == 0:
        raise ValueError("k-NN needs at least one training and one test feature.")
    train_features = F.normalize(train_features.float(), dim=1)
    test_features = F.normalize(test_features.float(), dim=1)
    train_labels, test_labels = train_labels.long(), test_labels.long()
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    top = min(5, num_classes)
    k_max = max(ks)
    correct = {(k, t): [0, 0] for k in ks for t in temperatures}
    for start in range(0, test_features.shape[0], test_chunk):
        queries, truth = test_features[start : start + test_chunk], test_labels[start : start + test_chunk]
        sims, idx = nearest_neighbors(train_features, queries, k_max, train_block)
        neighbor_labels = train_labels[idx]
        for k in ks:
            for temperature in temperatures:
                votes = torch.zeros(queries.shape[0], num_classes, device=queries.device)
                votes.scatter_add_(1, neighbor_labels[:, :k], (sims[:, :k] / temperature).exp())
                scores, ranked = votes.topk(top, dim=1)
                hits = (ranked == truth[:, None]) & (scores > 0)  # a class no neighbour voted for is no prediction
                correct[k, temperature][0] += int(hits[:, 0].sum())
                correct[k, temperature][1] += int(hits.any(dim=1).sum())
    total = test_features.shape[0]
    return [
        {"k": k, "temperature": t, "top1": hits[0] / total, "top5": hits[1] / total} for (k, t), hits in correct.items()
    ]


def best_knn_result(results: Iterable[dict]) -> dict:
    """The ``(k, T)`` with the best top-1 accuracy (the first one on ties)."""
    return max(results, key=lambda result: result["top1"])


def select_knn(
    bank: tuple[torch.Tensor, torch.Tensor],
    selection: tuple[torch.Tensor, torch.Tensor],
    evaluation: tuple[torch.Tensor, torch.Tensor],
    num_classes: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
) -> dict:
    """Choose ``(k, T)`` on ``selection``, then classify ``evaluation`` once with that choice, both against ``bank``,
    so that the reported figure was never used to choose (``selection`` is held out from train, ``bank`` is the
    rest of train; each a ``(features, labels)`` pair).

    Returns ``{"selection_sweep": [...], "chosen": {...}, "evaluation": {...}}``: the sweep on ``selection`` as
    :func:`knn_classify` gives it, its best row (the first one on ties) and the evaluation split's row at that
    ``(k, T)``. ``num_classes`` defaults to the largest bank label + 1 (the classes a neighbour can vote for).
    """
    num_classes = num_classes or int(bank[1].max()) + 1
    sweep = knn_classify(*bank, *selection, num_classes=num_classes, ks=ks, temperatures=temperatures)
    chosen = best_knn_result(sweep)
    (evaluated,) = knn_classify(
        *bank, *evaluation, num_classes=num_classes, ks=(chosen["k"],), temperatures=(chosen["temperature"],)
    )
    return {"selection_sweep": sweep, "chosen": chosen, "evaluation": evaluated}
