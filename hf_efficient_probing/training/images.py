"""Images as the backbone expects them: the paper's train/eval transforms with the processor's statistics.

Every transform starts from the package's checked decoder (`hf_efficient_probing.images.to_rgb`), so images of any
PIL mode reach the backbone as 8-bit RGB.
"""

from __future__ import annotations

from torchvision import transforms

from ..images import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_RESIZE_RATIO = 256 / 224  # the official recipe: resize the shorter side to 256/224 of the crop, then crop


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
    mean = tuple(getattr(image_processor, "image_mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(image_processor, "image_std", None) or IMAGENET_STD)
    return crop, mean, std


def build_transforms(
    image_processor,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    eval_resize_ratio: float = EVAL_RESIZE_RATIO,
) -> tuple[transforms.Compose, transforms.Compose]:
    """The paper's transforms: RandomResizedCrop + horizontal flip for training, resize + center crop for
    evaluation (bicubic), both normalised with the backbone processor's mean and std."""
    crop, mean, std = processor_image_settings(image_processor)
    normalize = transforms.Normalize(mean, std)
    bicubic = transforms.InterpolationMode.BICUBIC
    train = transforms.Compose(
        [
            transforms.Lambda(to_rgb),
            transforms.RandomResizedCrop(crop, scale=crop_scale, interpolation=bicubic),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    resize = tuple(int(round(side * eval_resize_ratio)) for side in crop)
    evaluation = transforms.Compose(
        [
            transforms.Lambda(to_rgb),
            transforms.Resize(resize if crop[0] != crop[1] else resize[0], interpolation=bicubic),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return train, evaluation


def suited_crop_scale_min(dataset, image_column: str, image_processor, sample: int = 16) -> float:
    """The lower scale bound of RandomResizedCrop for a data set's image size. The paper's 0.08 suits ImageNet photos,
    larger than the input; small images (e.g. 28-pixel digits read at 224) are already upsampled, and a crop of 8 %
    of them is a blur of a few pixels. So the bound grows with the upsampling: ``0.08 * (input / image side)^2``,
    within [0.08, 0.5], from the median shorter side of the first ``sample`` images."""
    (height, width), _, _ = processor_image_settings(image_processor)
    sides = sorted(min(dataset[index][image_column].size) for index in range(min(sample, len(dataset))))
    side = sides[len(sides) // 2] if sides else min(height, width)
    return float(min(0.5, max(0.08, 0.08 * (min(height, width) / side) ** 2)))
