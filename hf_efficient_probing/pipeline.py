"""``pipeline("image-classification")`` for multi-label probes: every class at or above the probe's threshold.

transformers' image-classification pipeline already applies a sigmoid to a model whose config says
``problem_type="multi_label_classification"``, but it always returns the ``top_k`` (5) best classes, whatever their
scores. A multi-label probe of this library saves the threshold chosen on held-out data
(``config.multi_label_threshold``), so importing the package makes that task's pipeline this subclass: for a model
whose config has a threshold, and a call that gives no ``top_k``, it returns every class whose sigmoid score
reaches the threshold (best first; none when no class does). Every other model, and every call that sets ``top_k``
or ``function_to_apply``, gets transformers' own behaviour.
"""

from __future__ import annotations

from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.image_classification import ClassificationFunction, ImageClassificationPipeline

TASK = "image-classification"
_DEFAULT_TOP_K = 5  # transformers' own default


class ProbeImageClassificationPipeline(ImageClassificationPipeline):
    """`ImageClassificationPipeline` that returns a multi-label probe's classes above its threshold (see module)."""

    def postprocess(self, model_outputs, function_to_apply=None, top_k=None):
        threshold = getattr(self.model.config, "multi_label_threshold", None)
        if threshold is None or top_k is not None or function_to_apply not in (None, ClassificationFunction.SIGMOID):
            return super().postprocess(model_outputs, function_to_apply, _DEFAULT_TOP_K if top_k is None else top_k)
        ranked = super().postprocess(model_outputs, ClassificationFunction.SIGMOID, self.model.config.num_labels)
        return [entry for entry in ranked if entry["score"] >= threshold]


def register_pipeline() -> None:
    """Make :class:`ProbeImageClassificationPipeline` the image-classification pipeline (by its dotted path, so the
    pipeline module is imported only when a pipeline is built)."""
    PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] = f"{__name__}.{ProbeImageClassificationPipeline.__name__}"
