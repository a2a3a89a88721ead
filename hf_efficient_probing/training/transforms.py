"""Images and clips as the backbone expects them: live training's augmentation, and the run's one evaluation
preprocessing.

The evaluation preprocessing is an image processor (:func:`evaluation_processor`), or for videos a video processor
(:func:`evaluation_video_processor`), saved beside every probe, so that a shipped probe sees an image or a clip as
the run that measured it did. Every transform starts from the package's checked decoders
(`hf_efficient_probing.images`, `hf_efficient_probing.video`), so images of any PIL mode reach the backbone as 8-bit
RGB and clips as ``uint8`` frames.
"""

from __future__ import annotations

import torch
from torchvision import transforms, tv_tensors
from torchvision.transforms import v2
from transformers import CLIPImageProcessor, VideoMAEVideoProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from ..images import decode_image, to_rgb

EVAL_RESIZE_RATIO = 256 / 224  # the official recipe: resize the shorter side to 256/224 of the crop, then crop
VIDEO_CROP_SCALE_MIN = 0.3  # V-JEPA 2's eval: RandomResizedCrop(scale=(0.3, 1.0)) of every training clip


def processor_image_settings(image_processor) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """``(height, width)`` of the backbone's input crop, and its normalisation mean and std."""
    size = None
    if getattr(image_processor, "do_center_crop", False) and getattr(image_processor, "crop_size", None):
        size = image_processor.crop_size
    size = size or getattr(image_processor, "size", None) or {"height": 224, "width": 224}
    if isinstance(size, int):
        crop = (size, size)
    elif "height" in size and "width" in size:
        crop = (size["height"], size["width"])
    elif "shortest_edge" in size:
        crop = (size["shortest_edge"], size["shortest_edge"])
    else:
        raise ValueError(f"Cannot read the input size from the image processor's size {size!r}.")
    mean = tuple(getattr(image_processor, "image_mean", None) or IMAGENET_DEFAULT_MEAN)
    std = tuple(getattr(image_processor, "image_std", None) or IMAGENET_DEFAULT_STD)
    return crop, mean, std


def training_transform(image_processor, crop_scale: tuple[float, float]) -> transforms.Compose:
    """Live training's augmentation, the paper's: RandomResizedCrop over ``crop_scale`` (bicubic) + horizontal flip,
    normalised with the backbone processor's mean and std."""
    crop, mean, std = processor_image_settings(image_processor)
    return transforms.Compose(
        [
            transforms.Lambda(to_rgb),
            transforms.RandomResizedCrop(crop, scale=crop_scale, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def evaluation_processor(image_processor, eval_resize_ratio: float = EVAL_RESIZE_RATIO) -> CLIPImageProcessor:
    """The deterministic preprocessing of a run, as an image processor: resize (bicubic) the shorter side to
    ``eval_resize_ratio`` times the backbone's input crop, centre-crop the input, normalise with the backbone
    processor's mean and std (the paper's evaluation transform).

    It is the one preprocessing of everything a run measures (the token cache, the selection split, the evaluation
    split) and it is the processor saved beside every probe the run writes, whatever the backbone's own processor does
    (``ViTImageProcessor`` squashes, DINOv2's crops at another ratio): ``pipeline("image-classification", model=...)``
    then classifies an image as the run measured it."""
    return CLIPImageProcessor(**_evaluation_settings(image_processor, eval_resize_ratio), do_convert_rgb=True)


def evaluation_video_processor(processor, eval_resize_ratio: float = EVAL_RESIZE_RATIO) -> VideoMAEVideoProcessor:
    """The deterministic preprocessing of a video run, as a video processor: every frame of a clip resized (bicubic,
    the shorter side to ``eval_resize_ratio`` times the backbone's input crop), centre-cropped and normalised with
    the backbone processor's mean and std, as :func:`evaluation_processor` does to an image (V-JEPA 2's own eval
    transform is this one). ``VideoMAEVideoProcessor`` is transformers' plain video processor (no frame sampling of
    its own: the run samples clips, `hf_efficient_probing.video`)."""
    return VideoMAEVideoProcessor(**_evaluation_settings(processor, eval_resize_ratio), do_sample_frames=False)


def _evaluation_settings(processor, eval_resize_ratio: float) -> dict:
    """The evaluation transform's settings, shared by the image and the video processor."""
    (height, width), mean, std = processor_image_settings(processor)
    resized = {"height": round(height * eval_resize_ratio), "width": round(width * eval_resize_ratio)}
    return {
        "size": {"shortest_edge": resized["height"]} if height == width else resized,
        "crop_size": {"height": height, "width": width},
        "do_center_crop": True,
        "resample": PILImageResampling.BICUBIC,
        "do_rescale": True,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }


class ClipTransform:
    """Clips ``uint8`` ``[K, T, 3, H, W]`` through a video processor, as ``[K, T, 3, h, w]`` floats: a video data
    set's eval transform that is exactly the saved processor. Its ``repr`` is the processor's config."""

    def __init__(self, video_processor):
        self.video_processor = video_processor

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        processed = self.video_processor(videos=list(clips), return_tensors="pt")
        return next(iter(processed.values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.video_processor.to_json_string()})"


class TrainingClipTransform:
    """Live training's augmentation of a clip ``uint8`` ``[T, 3, H, W]``: one RandomResizedCrop over ``crop_scale``
    (bicubic) and one horizontal flip for all its frames, normalised with the backbone processor's mean and std
    (V-JEPA 2's eval trains its probes on such clips)."""

    def __init__(self, processor, crop_scale: tuple[float, float]):
        crop, mean, std = processor_image_settings(processor)
        self.augment = v2.Compose(
            [
                v2.RandomResizedCrop(
                    crop, scale=crop_scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True
                ),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(mean), list(std)),
            ]
        )

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        return self.augment(tv_tensors.Video(clip)).as_subclass(torch.Tensor)  # one crop and flip for every frame


class ProcessorTransform:
    """One image through an image processor, as a ``[3, H, W]`` tensor: a data set's eval transform that is exactly
    the saved processor. Its ``repr`` is the processor's config, so a token cache sees any change of it."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image) -> torch.Tensor:
        return self.image_processor(to_rgb(image), return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.image_processor.to_json_string()})"


def suited_crop_scale_min(dataset, image_column: str, image_processor, sample: int = 16) -> float:
    """The lower scale bound of RandomResizedCrop for a data set's image size. The paper's 0.08 suits ImageNet photos,
    larger than the input; small images (e.g. 28-pixel digits read at 224) are already upsampled, and a crop of 8 %
    of them is a blur of a few pixels. So the bound grows with the upsampling: ``0.08 * (input / image side)^2``,
    within [0.08, 0.5], from the median shorter side of the first ``sample`` images."""
    (height, width), _, _ = processor_image_settings(image_processor)
    sides = sorted(
        min(decode_image(dataset[index][image_column], f"the image at index {index} of the train split").size)
        for index in range(min(sample, len(dataset)))
    )
    side = sides[len(sides) // 2] if sides else min(height, width)
    return float(min(0.5, max(0.08, 0.08 * (min(height, width) / side) ** 2)))
