"""Multi-label figures on tensors: average precision (macro and micro), F1 at a threshold, and the threshold's choice.

Each image may carry any number of the C classes (none included), so a probe scores every class on its own
(sigmoid) and there is no top-1. Mean average precision ranks the images per class and needs no threshold: what
the grid selects on. F1 needs one: :func:`choose_threshold` picks it on the held-out split, and the evaluation split
is then scored at that threshold, never at one chosen on itself.

Average precision is scikit-learn's ``average_precision_score`` (the step-wise area under the precision-recall
curve, tied scores taken as one step), written here in torch to keep scikit-learn out of the dependencies; the tests
check it against scikit-learn. Classes with no positive image in the split have no average precision (and no
recall): they are left out of the macro means, and :func:`multi_label_scores` says how many were scored.
"""

from __future__ import annotations

import torch

THRESHOLD_CANDIDATES = torch.linspace(0.01, 0.99, 99)  # probabilities: one threshold shared by every class


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Average precision of one ranking: ``scores`` ``[N]`` (higher: more likely positive), ``targets`` ``[N]`` 0/1.
    ``nan`` when there is no positive."""
    targets = targets.to(torch.float64)
    positives = targets.sum()
    if positives == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    order = torch.argsort(scores, descending=True, stable=True)
    ranked, hits = scores[order], targets[order]
    true_positives = torch.cumsum(hits, 0)
    # one precision-recall point per distinct score: the last rank of each run of ties
    last_of_tie = torch.ones_like(ranked, dtype=torch.bool)
    last_of_tie[:-1] = ranked[:-1] != ranked[1:]
    true_positives = true_positives[last_of_tie]
    predicted = torch.arange(1, len(ranked) + 1, dtype=torch.float64)[last_of_tie]
    precision, recall = true_positives / predicted, true_positives / positives
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return (steps * precision).sum()


def macro_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """``(mean AP over the classes with a positive, how many classes that is)`` of ``[N, C]`` scores and targets."""
    per_class = torch.stack([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    scored = ~torch.isnan(per_class)
    return (per_class[scored].mean().item() if scored.any() else float("nan")), int(scored.sum())


def micro_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """AP of every (image, class) pair ranked together: frequent classes weigh more than in the macro mean."""
    return average_precision(scores.reshape(-1), targets.reshape(-1)).item()


def f1_scores(probabilities: torch.Tensor, targets: torch.Tensor, threshold: float) -> tuple[float, float]:
    """``(micro F1, macro F1)`` of predicting every class whose probability is at least ``threshold``; the macro
    mean is over the classes with a positive, as the macro AP."""
    predicted, actual = torch.as_tensor(probabilities) >= threshold, torch.as_tensor(targets) > 0.5
    true_positives = (predicted & actual).sum(0).to(torch.float64)
    predicted_count, actual_count = predicted.sum(0).to(torch.float64), actual.sum(0).to(torch.float64)
    micro = 2 * true_positives.sum() / (predicted_count.sum() + actual_count.sum()).clamp(min=1)
    scored = actual_count > 0
    per_class = 2 * true_positives[scored] / (predicted_count[scored] + actual_count[scored])
    return micro.item(), (per_class.mean().item() if scored.any() else float("nan"))


def choose_threshold(probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    """The probability threshold (one for every class, from :data:`THRESHOLD_CANDIDATES`) with the best micro F1 on
    these (held-out) images; the lowest such threshold on ties."""
    best, chosen = -1.0, 0.5
    for threshold in THRESHOLD_CANDIDATES.tolist():
        micro, _ = f1_scores(probabilities, targets, threshold)
        if micro > best:
            best, chosen = micro, round(threshold, 4)
    return chosen


def multi_label_scores(logits: torch.Tensor, targets: torch.Tensor, threshold: float | None = None) -> dict:
    """The figures of ``[N, C]`` logits against multi-hot ``targets``: ``map`` (macro), ``micro_map``, the number
    of ``classes_scored``, and with ``threshold`` the ``f1_micro`` and ``f1_macro`` at it."""
    logits, targets = torch.as_tensor(logits).to(torch.float64), torch.as_tensor(targets).to(torch.float64)
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(f"Multi-label scores need [N, C] logits and targets; got {logits.shape}, {targets.shape}.")
    if len(logits) == 0:
        raise ValueError("No examples to score: the split is empty.")
    macro, scored = macro_average_precision(logits, targets)
    result = {"map": macro, "micro_map": micro_average_precision(logits, targets), "classes_scored": scored}
    if threshold is not None:
        result["f1_micro"], result["f1_macro"] = f1_scores(torch.sigmoid(logits), targets, threshold)
        result["threshold"] = threshold
    return result
