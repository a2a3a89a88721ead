"""What each EP query contributes (the paper's Figure 4): its attention entropy and the accuracy lost without it.

For every query j, over a labelled evaluation set:

* **entropy**: the mean over images of ``H(a_j) = -sum_n a_jn log a_jn`` (nats), where ``a_j`` is the query's
  attention over the tokens the probe reads; low entropy = a focused query, ``log N`` = uniform attention;
* **accuracy drop**: top-1 accuracy of the probe minus its accuracy when ``a_j`` alone is replaced by the uniform
  distribution ``1/N`` (the query then contributes the mean token through its value block).

The backbone runs once per batch; the model's own forward then runs ``M + 1`` times on the same tokens, with
``uniform_queries=[j]`` for the runs without query j.

    hf-probe analyze --model user/probe --data_dir val_images/ --output_dir analysis/   # (analysis.commands)

Defined for EP probes (their pooling takes ``uniform_queries``); the labels of the data set must be the probe's
class indices.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ..atomic import atomic_write_text
from ..tables import markdown_table


@dataclass
class QueryContribution:
    query: int
    entropy: float
    accuracy: float
    accuracy_drop: float


@dataclass
class QueryAnalysis:
    """Top-1 accuracy (%) of the probe as trained, each query's contribution, and the number of tokens it reads
    (``log(num_tokens)`` is the entropy of uniform attention)."""

    accuracy: float
    queries: list[QueryContribution]
    num_tokens: int


def attention_entropy(attentions: torch.Tensor) -> torch.Tensor:
    """``[B, Q, N]`` attention -> ``[B, Q]`` entropy in nats (0 log 0 taken as 0)."""
    return -(attentions * attentions.clamp_min(torch.finfo(attentions.dtype).tiny).log()).sum(-1)


@torch.no_grad()
def query_contributions(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> QueryAnalysis:
    """Accuracy of the probe and each query's entropy and accuracy drop over the labelled ``batches``.

    Args:
        model: an EP probe.
        batches: ``(pixel_values [B, 3, H, W], labels [B])`` pairs.
    """
    model.eval()
    num_queries = getattr(model.probe.pooling, "num_queries", None)
    if num_queries is None or not model.probe.pooling.supports_uniform_queries:
        raise ValueError(f"The {model.config.pooling_name!r} probe has no queries to analyse; use an EP probe.")
    correct = torch.zeros(num_queries + 1, dtype=torch.long)  # [0]: the probe as trained; [j + 1]: query j uniform
    entropy = torch.zeros(num_queries, dtype=torch.float64)
    seen = 0
    for pixel_values, labels in batches:
        read = model.read_tokens(pixel_values.to(device=model.device, dtype=model.dtype))
        inputs = {"tokens": read.tokens, "grid_size": read.grid_size, "token_mask": read.mask}
        labels = labels.to(model.device)
        outputs = model(**inputs, output_attentions=True)
        correct[0] += int((outputs.logits.argmax(-1) == labels).sum())
        entropy += attention_entropy(outputs.probe_attentions.double()).sum(0).cpu()
        for query in range(num_queries):
            logits = model(**inputs, uniform_queries=[query]).logits
            correct[query + 1] += int((logits.argmax(-1) == labels).sum())
        seen += len(labels)
        num_tokens = read.tokens.shape[1]
    if seen == 0:
        raise ValueError("The evaluation set is empty.")
    accuracy = 100.0 * correct.double() / seen
    rows = [
        QueryContribution(
            query=query,
            entropy=float(entropy[query] / seen),
            accuracy=float(accuracy[query + 1]),
            accuracy_drop=float(accuracy[0] - accuracy[query + 1]),
        )
        for query in range(num_queries)
    ]
    return QueryAnalysis(accuracy=float(accuracy[0]), queries=rows, num_tokens=num_tokens)


def contribution_table(analysis: QueryAnalysis) -> str:
    """A Markdown table, queries sorted by accuracy drop (largest first)."""
    lines = [
        f"Top-1 accuracy of the probe: {analysis.accuracy:.2f} % ({analysis.num_tokens} tokens per image; uniform "
        f"attention has entropy {torch.tensor(float(analysis.num_tokens)).log():.3f})",
        "",
    ]
    rows = [
        (str(r.query), f"{r.entropy:.3f}", f"{r.accuracy:.2f}", f"{r.accuracy_drop:.2f}")
        for r in sorted(analysis.queries, key=lambda r: -r.accuracy_drop)
    ]
    headers = ["query", "entropy (nats)", "top-1 with uniform attention (%)", "accuracy drop (points)"]
    lines.append(markdown_table(headers, rows, ["right"] * 4))
    return "\n".join(lines) + "\n"


def contribution_plot(analysis: QueryAnalysis) -> Figure:
    """Scatter plot of accuracy drop against attention entropy, one labelled point per query."""
    rows = analysis.queries
    figure = Figure(figsize=(5, 4))
    axis = figure.subplots()
    axis.scatter([r.entropy for r in rows], [r.accuracy_drop for r in rows])
    for row in rows:
        axis.annotate(
            str(row.query), (row.entropy, row.accuracy_drop), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    axis.axvline(
        float(torch.tensor(float(analysis.num_tokens)).log()), linestyle="--", color="gray", label="uniform (log N)"
    )
    axis.legend(fontsize=8)
    axis.set_xlabel("attention entropy (nats)")
    axis.set_ylabel("top-1 drop with uniform attention (points)")
    axis.set_title("Contribution of each query")
    figure.tight_layout()
    return figure


def write_analysis(analysis: QueryAnalysis, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``query_analysis.csv``, ``query_analysis.md`` and ``query_analysis.png`` to ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_dir / f"query_analysis.{kind}" for kind in ("csv", "md", "png")}
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["query", "entropy", "accuracy", "accuracy_drop"])
    writer.writerows([r.query, r.entropy, r.accuracy, r.accuracy_drop] for r in analysis.queries)
    atomic_write_text(paths["csv"], table.getvalue())
    atomic_write_text(paths["md"], contribution_table(analysis))
    contribution_plot(analysis).savefig(paths["png"], dpi=120)
    return paths
