"""Top-1 and top-5 accuracy as an `evaluate` metric that ships with the package and loads by path, offline.

``evaluate.load("accuracy")`` fetches its script from the Hub; this module needs nothing but itself:

```python
>>> import evaluate
>>> from hf_efficient_probing.training.metrics import TOP_K_ACCURACY_PATH
>>> metric = evaluate.load(TOP_K_ACCURACY_PATH)
>>> metric.compute(predictions=[[2, 0, 1], [1, 2, 0]], references=[2, 0])
{'accuracy': 0.5, 'top5_accuracy': 1.0}
```
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Top-1 and top-k accuracy (k = 5 by default) of ranked class predictions."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): for each example, class indices ranked from most to least likely (at
        least the k best; fewer when there are fewer classes). The argsort of the logits, or `logits.topk(k).indices`.
    references (`list` of `int`): the true class of each example.
    k (`int`, defaults to 5): the k of top-k accuracy.
    num_probes (`int`, optional): score several probes in one call (a grid of probes evaluated together): the
        rows are example-major, row `i * num_probes + j` being probe `j` on example `i`, and `references` repeats
        each example's class `num_probes` times.
Returns:
    accuracy (`float`): fraction of examples whose first prediction is right (with `num_probes`: a list, one per
        probe).
    top{k}_accuracy (`float`): fraction of examples whose true class is among the first k predictions (a list
        with `num_probes`).
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k: int = 5, num_probes: int | None = None):
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("No examples to score: the evaluation split is empty.")
        if num_probes is not None and (num_probes < 1 or len(references) % num_probes):
            raise ValueError(
                f"{len(references)} rows cannot hold {num_probes} probes per example: pass num_probes * examples "
                "rows, example-major."
            )
        ranked = [np.asarray(row, dtype=np.int64)[:k] for row in predictions]
        top1 = np.array([row.size > 0 and row[0] == ref for row, ref in zip(ranked, references, strict=True)])
        topk = np.array([ref in row for row, ref in zip(ranked, references, strict=True)])
        if num_probes is None:
            return {"accuracy": float(top1.mean()), f"top{k}_accuracy": float(topk.mean())}
        per_probe = (top1.reshape(-1, num_probes).mean(0), topk.reshape(-1, num_probes).mean(0))
        return {"accuracy": per_probe[0].tolist(), f"top{k}_accuracy": per_probe[1].tolist()}
