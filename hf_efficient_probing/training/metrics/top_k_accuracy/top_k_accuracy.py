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
Returns:
    accuracy (`float`): fraction of examples whose first prediction is right.
    top{k}_accuracy (`float`): fraction of examples whose true class is among the first k predictions.
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

    def _compute(self, predictions, references, k: int = 5):
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("No examples to score: the evaluation split is empty.")
        ranked = [np.asarray(row, dtype=np.int64)[:k] for row in predictions]
        top1 = np.array([row.size > 0 and row[0] == ref for row, ref in zip(ranked, references, strict=True)])
        topk = np.array([ref in row for row, ref in zip(ranked, references, strict=True)])
        return {"accuracy": float(top1.mean()), f"top{k}_accuracy": float(topk.mean())}
