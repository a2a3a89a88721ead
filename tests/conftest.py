"""Shared fixtures: tiny backbones of every supported family, built from configs (no Hub access)."""

from __future__ import annotations

import os
import tempfile  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Nothing a test runs writes into the developer's caches: token caches and the HF home live in a folder of this run
_SCRATCH = tempfile.mkdtemp(prefix="hf-probing-tests-")
os.environ["HF_PROBING_TOKEN_CACHE"] = os.path.join(_SCRATCH, "token-cache")
os.environ["HF_EFFICIENT_PROBING_CACHE"] = os.path.join(_SCRATCH, "demo-cache")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_SCRATCH, "datasets")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig  # noqa: E402

from hf_efficient_probing.backbones import FAMILIES, VIDEO_FAMILIES, build_backbone  # noqa: E402
from hf_efficient_probing.cache import CachedSplit, TokenCacheKey  # noqa: E402

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
)
FAMILY_EXTRAS = {
    "dinov2_with_registers": {"num_register_tokens": 2},
    "dinov3_vit": {"num_register_tokens": 2},
}
# Families whose configs do not take the ViT-style sizes above: two stages (or blocks) of width 16-32 for 32 px images.
TINY_CONFIGS = {
    "siglip2_vision_model": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8, num_patches=16
    ),
    "convnext": dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, image_size=32),
    "convnextv2": dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, image_size=32),
    "resnet": dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"),
    "regnet": dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8),
    "efficientnet": dict(
        image_size=32,
        width_coefficient=0.25,
        depth_coefficient=0.1,
        hidden_dim=320,
        kernel_sizes=[3, 3],
        in_channels=[32, 16],
        out_channels=[16, 24],
        strides=[1, 2],
        num_block_repeats=[1, 1],
        expand_ratios=[1, 6],
    ),
    "mobilenet_v2": dict(image_size=32, depth_multiplier=0.25, finegrained_output=False),
    "mobilevit": dict(
        image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], num_attention_heads=2
    ),
    "vitdet": dict(
        image_size=32, pretrain_image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4
    ),
    "swin": dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
    "swinv2": dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
    "focalnet": dict(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], hidden_sizes=[16, 32], focal_windows=[3, 3]
    ),
    "hiera": dict(
        image_size=[32, 32],
        patch_size=[3, 3],
        patch_stride=[4, 4],
        patch_padding=[1, 1],
        embed_dim=16,
        depths=[1, 1],
        num_heads=[1, 2],
        query_stride=[2, 2],
        masked_unit_size=[2, 2],
        masked_unit_attention=[True, False],
        num_query_pool=1,
    ),
    "pvt": dict(
        image_size=32,
        num_encoder_blocks=2,
        depths=[1, 1],
        hidden_sizes=[16, 32],
        sequence_reduction_ratios=[2, 1],
        num_attention_heads=[1, 2],
        patch_sizes=[4, 2],
        strides=[4, 2],
        mlp_ratios=[2, 2],
    ),
    "levit": dict(
        image_size=64,
        hidden_sizes=[16, 32],
        num_attention_heads=[1, 2],
        depths=[1, 1],
        key_dim=[8, 8],
        down_ops=[["Subsample", 8, 1, 4, 2, 2]],
    ),
    "timm_wrapper": dict(
        architecture="vit_small_patch16_224",
        model_args=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reg_tokens=2),
    ),
    # Video: clips of 4 frames of 32x32 px, 8 px patches; tubelets of 2 frames (TimeSformer: one frame per token).
    "videomae": dict(TINY, num_frames=4, tubelet_size=2),
    "vivit": dict(TINY, num_frames=4, tubelet_size=(2, 8, 8)),  # a tuple, as its default: saved configs hold lists
    "timesformer": dict(TINY, num_frames=4),
    "vjepa2": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        crop_size=32,
        patch_size=8,
        frames_per_clip=4,
        tubelet_size=2,
        pred_hidden_size=16,
        pred_num_hidden_layers=1,
        pred_num_attention_heads=2,
        num_pooler_layers=1,
    ),
}
CLIP_FRAMES = 4
# The ViT-like image families (sequences on the config's patch grid), which share the ViT-style tiny config.
SEQUENCE_FAMILIES = sorted(name for name, row in FAMILIES.items() if row.patch_sequence and row.video is None)


def cached_split(**overrides) -> CachedSplit:
    """The data side of a test cache key (a made-up data set of 10 images, labels 0-9)."""
    settings = dict(
        dataset="images-v1",
        split="train",
        preprocessing="eval-transform-v1",
        image_column="image",
        label_column="label",
        label_names=tuple(str(i) for i in range(10)),
    )
    return CachedSplit(**{**settings, **overrides})


def cache_key(backbone, reader, **overrides) -> TokenCacheKey:
    """A test cache key: float32 storage and float32 compute (tests that compare cached with live tokens at float32
    tolerance pin the precision: bf16 autocast is the default on CPUs that have bf16 units)."""
    data = {name: overrides.pop(name) for name in list(overrides) if name in CachedSplit.__dataclass_fields__}
    settings = dict(dtype="float32", compute_dtype="float32")
    return TokenCacheKey.from_reader(backbone, reader, cached_split(**data), **{**settings, **overrides})


def tiny_backbone_config(model_type: str, **overrides):
    """A two-layer (or two-stage), 16-32 wide backbone config of the family, for 32x32 images (a 4x4 patch grid
    for the ViT-like families)."""
    sizes = TINY_CONFIGS.get(model_type) or {**TINY, **FAMILY_EXTRAS.get(model_type, {})}
    return AutoConfig.for_model(model_type, **{**sizes, **overrides})


def tiny_backbone(model_type: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_backbone(tiny_backbone_config(model_type, **overrides)).eval()


def random_clips(batch: int = 2, seed: int = 1, frames: int = CLIP_FRAMES, size: int = 32) -> torch.Tensor:
    """``[B, T, 3, H, W]`` clips as the video families' processors return them."""
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def write_video(path, frames: torch.Tensor, frame_rate: int = 8):
    """Write ``uint8`` ``[T, 3, H, W]`` frames as an H.264 video file (torchcodec's encoder) and return its path."""
    from torchcodec.encoders import VideoEncoder

    VideoEncoder(frames, frame_rate=frame_rate).to_file(str(path))
    return path


@pytest.fixture(params=VIDEO_FAMILIES)
def video_family(request) -> str:
    """Every video backbone family of the adapter table."""
    return request.param


@pytest.fixture(params=SEQUENCE_FAMILIES)
def family(request) -> str:
    """Every ViT-like backbone family of the adapter table (they share one tiny config)."""
    return request.param


@pytest.fixture(params=sorted(FAMILIES))
def any_family(request) -> str:
    """Every backbone family of the adapter table: ViT-like, CNN, hierarchical, NaFlex and timm."""
    return request.param


@pytest.fixture
def saved_backbone(tmp_path):
    """Save a tiny backbone of a family to a local directory (a stand-in for a Hub id) and return its path."""

    def save(model_type: str = "vit", **overrides) -> str:
        path = tmp_path / f"backbone-{model_type}"
        tiny_backbone(model_type, **overrides).save_pretrained(path)
        return str(path)

    return save


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(4, 3, 32, 32)


@pytest.fixture
def transformers_logs(caplog):
    """`caplog` that also receives the warnings of `transformers` (its logger does not propagate by default)."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            yield caplog
    finally:
        hf_logging.disable_propagation()


SIZE, FRAMES, SQUARE = 40, 12, 10
DIRECTIONS = {"right": (0, 3), "down": (3, 0), "diagonal": (2, 2)}  # pixels a frame (rows, columns)


def moving_square(direction: str, start: int, num_frames: int = FRAMES) -> torch.Tensor:
    """``uint8`` ``[T, 3, H, W]``: a bright square on a dark ground moving in ``direction`` from ``start``."""
    (rows, columns), frames = DIRECTIONS[direction], torch.full((num_frames, 3, SIZE, SIZE), 20, dtype=torch.uint8)
    for index in range(num_frames):
        top, left = start + rows * index, start + columns * index
        frames[index, :, top : top + SQUARE, left : left + SQUARE] = 230
    return frames


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory):
    """A video folder of moving squares: ``train/<direction>/*.mp4`` (6 a class) and
    ``validation/<direction>/*.mp4`` (2 a class)."""
    root = tmp_path_factory.mktemp("videos")
    for split, count in (("train", 6), ("validation", 2)):
        for direction in DIRECTIONS:
            (root / split / direction).mkdir(parents=True)
            for index in range(count):
                write_video(root / split / direction / f"{index}.mp4", moving_square(direction, start=index % 3))
    return str(root)
