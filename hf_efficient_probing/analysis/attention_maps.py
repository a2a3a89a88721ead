"""Attention maps of a probe: each query's (or head's) attention over the patch grid, overlaid on the image.

Works for every probe that returns ``probe_attentions`` ``[B, Q, N]`` (EP and the attentive baselines); leading
[CLS] tokens are dropped and the remaining ``N - prefix`` weights are laid out on the patch grid. A video probe's
weights lie on the clip's ``(frames, rows, columns)`` grid and are drawn per frame: one row per token frame, one
column per query.

    hf-probe attention-maps --model user/probe --image cat.jpg --output maps.png   # (analysis.commands)
    hf-probe attention-maps --model user/video-probe --video clip.mp4 --output maps.png

The functions take a loaded probe model (``model.read_tokens``, ``model(tokens=..., output_attentions=True)``), so
this module imports no model class: the publishing layer (`hub`) draws its card figure with it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no global backend switch, no window, works headless
from PIL import Image

from ..backbones import backbone_family, layer_states
from ..images import decode_image
from ..probes import EfficientProbing
from ..video import decode_clips


def attention_to_grid(attentions: torch.Tensor, grid_size: tuple[int, ...]) -> torch.Tensor:
    """``[..., Q, N]`` attention over tokens -> ``[..., Q, rows, columns]`` over patches, or ``[..., Q, frames,
    rows, columns]`` over a clip's space-time grid (leading tokens dropped)."""
    if grid_size is None:
        raise ValueError(
            "These tokens have no common patch grid (a padded NaFlex batch of images of different sizes): draw the "
            "attention maps of one image at a time."
        )
    num_prefix = attentions.shape[-1] - math.prod(grid_size)
    if num_prefix < 0:
        raise ValueError(
            f"{attentions.shape[-1]} attention weights cannot cover a {'x'.join(map(str, grid_size))} patch grid; "
            "pass the grid of the tokens the probe read."
        )
    return attentions[..., num_prefix:].reshape(*attentions.shape[:-1], *grid_size)


def attention_unit(pooling) -> str:
    """What one attention map belongs to: an EP "query", a multi-head pooling's "head", or just a "map"."""
    if isinstance(pooling, EfficientProbing):
        return "query"
    return "head" if getattr(pooling, "num_heads", None) else "map"


@torch.no_grad()
def count_attention_maps(model) -> int | None:
    """How many attention maps the probe returns per image (``None`` if its pooling has no attention), found by
    running the pooling once on blank tokens on the grid the probe reads at the backbone's native size."""
    pooling = model.probe.pooling
    grid = (
        model.config.clip_token_grid
        or layer_states(model.token_reader.config, model.config.feature_layers)[0].grid_size
    )
    grid = grid or (1, 1)  # NaFlex: no fixed grid, and the number of maps does not depend on it
    num_prefix = int(model.config.reads_cls_token)
    tokens = torch.zeros(
        1, num_prefix + math.prod(grid), model.config.token_width, device=model.device, dtype=model.dtype
    )
    was_training = pooling.training
    attentions = pooling.eval()(tokens, num_prefix_tokens=num_prefix, grid_size=grid).attentions
    pooling.train(was_training)
    return None if attentions is None else attentions.shape[1]


def unnormalize(pixel_values: torch.Tensor, image_processor=None) -> np.ndarray:
    """``[3, H, W]`` model input -> ``[H, W, 3]`` image in [0, 1] (``[T, 3, H, W]`` frames -> ``[T, H, W, 3]``),
    undoing the (image or video) processor's normalisation."""
    image = pixel_values.detach().float().cpu()
    mean = getattr(image_processor, "image_mean", None)
    std = getattr(image_processor, "image_std", None)
    if mean is not None and std is not None and getattr(image_processor, "do_normalize", True):
        image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:  # unknown normalisation: stretch to [0, 1] so that the image is at least visible
        image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    return image.clamp(0, 1).movedim(-3, -1).numpy()


def plot_attention_maps(
    image: np.ndarray,
    maps: torch.Tensor,
    *,
    columns: int = 8,
    alpha: float = 0.6,
    unit: str = "query",
    title: str | None = None,
):
    """A figure with the image and one panel per map (``[Q, rows, columns]``), each upsampled to the image size."""
    num_maps = maps.shape[0]
    height, width = image.shape[:2]
    upsampled = torch.nn.functional.interpolate(maps[:, None].float(), size=(height, width), mode="nearest")[:, 0]
    columns = max(1, min(columns, num_maps + 1))
    rows = math.ceil((num_maps + 1) / columns)
    figure = Figure(figsize=(1.8 * columns, 1.8 * rows + (0.4 if title else 0)))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("image", fontsize=8)
    for index, (axis, attention) in enumerate(zip(axes.flat[1:], upsampled, strict=False)):
        axis.imshow(image)
        axis.imshow(attention.numpy(), cmap="inferno", alpha=alpha)
        axis.set_title(f"{unit} {index}", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_video_attention_maps(
    frames: np.ndarray, maps: torch.Tensor, *, alpha: float = 0.6, unit: str = "query", title: str | None = None
):
    """A figure of a clip's attention per frame: one row per token frame (``frames`` ``[T', H, W, 3]``, the first
    frame of each tubelet), the frame first, then one panel per map (``maps`` ``[Q, T', rows, columns]``)."""
    num_maps, num_frames = maps.shape[:2]
    height, width = frames.shape[1:3]
    upsampled = torch.nn.functional.interpolate(maps.float(), size=(height, width), mode="nearest")  # Q, T', H, W
    figure = Figure(figsize=(1.8 * (num_maps + 1), 1.8 * num_frames + (0.4 if title else 0)))
    axes = figure.subplots(num_frames, num_maps + 1, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for frame, row in enumerate(axes):
        row[0].imshow(frames[frame])
        row[0].set_title(f"frame {frame}", fontsize=8)
        for index, axis in enumerate(row[1:]):
            axis.imshow(frames[frame])
            axis.imshow(upsampled[index, frame].numpy(), cmap="inferno", alpha=alpha)
            axis.set_title(f"{unit} {index}", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


@torch.no_grad()
def probe_attention_maps(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, num_labels]`` and attention maps ``[B, Q, rows, columns]`` of a probe on a batch of images, or
    ``[B, Q, frames, rows, columns]`` of a video probe on a batch of clips ``[B, T, 3, H, W]``."""
    read = model.read_tokens(pixel_values.to(device=model.device, dtype=model.dtype))
    outputs = model(tokens=read.tokens, grid_size=read.grid_size, token_mask=read.mask, output_attentions=True)
    if outputs.probe_attentions is None:
        raise ValueError(
            f"The {model.config.pooling_name!r} probe has no attention to draw; attention maps exist for EP and the "
            "attentive baselines."
        )
    return outputs.logits, attention_to_grid(outputs.probe_attentions, read.grid_size)


def save_attention_maps(
    model,
    image: Image.Image | str | os.PathLike,
    output: str | os.PathLike,
    image_processor,
    columns: int = 8,
) -> Path:
    """Draw the probe's attention maps on one image, prepared by ``image_processor`` (the backbone's), and save them
    as a PNG. Returns the path written."""
    image = decode_image(image, f"the image {image}" if not isinstance(image, Image.Image) else "the image")
    pixel_values = image_processor(image, return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values.to(device=model.device, dtype=model.dtype)
    logits, maps = probe_attention_maps(model.eval(), pixel_values)
    label = int(logits[0].argmax())
    prediction = model.config.id2label.get(label, str(label))
    figure = plot_attention_maps(
        unnormalize(pixel_values[0], image_processor),
        maps[0].cpu(),
        columns=columns,
        unit=attention_unit(model.probe.pooling),
        title=f"{model.config.pooling_name} probe, prediction: {prediction}",
    )
    return _save(figure, output)


def save_video_attention_maps(
    model, video, output: str | os.PathLike, video_processor, frame_stride: int = 1, where: str | None = None
) -> Path:
    """Draw a video probe's attention maps, frame by frame, on the centred clip of ``video`` (a file, its bytes or
    a `datasets` video: ``config.frames_per_clip`` frames every ``frame_stride``), prepared by ``video_processor``
    (the backbone's), and save them as a PNG. Returns the path written."""
    frames = model.config.frames_per_clip
    if frames is None:
        raise ValueError(
            f"This probe reads images ({model.config.backbone_config.model_type!r}): draw its maps on an image."
        )
    where = where or (f"the video {video}" if isinstance(video, (str, os.PathLike)) else "the video")
    clip = decode_clips(video, frames, frame_stride, where=where)[0]
    inputs = video_processor([clip], return_tensors="pt")
    pixel_values = inputs.get("pixel_values", inputs.get("pixel_values_videos"))
    pixel_values = pixel_values.to(device=model.device, dtype=model.dtype)
    logits, maps = probe_attention_maps(model.eval(), pixel_values)
    video_family = backbone_family(model.config.backbone_config).video  # None: an image backbone frame by frame
    tubelet = 1 if video_family is None else video_family.tubelet(model.config.backbone_config)[0]
    label = int(logits[0].argmax())
    figure = plot_video_attention_maps(
        unnormalize(pixel_values[0, ::tubelet], video_processor),
        maps[0].cpu(),
        unit=attention_unit(model.probe.pooling),
        title=f"{model.config.pooling_name} probe, prediction: {model.config.id2label.get(label, str(label))}",
    )
    return _save(figure, output)


def _save(figure, output: str | os.PathLike) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    return output
