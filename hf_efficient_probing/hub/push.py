"""Publishing a probe repository on the Hub.

A probe repository holds what a user needs to run the probe in one line: ``config.json`` (the probe and the
backbone's id and revision), ``model.safetensors`` (the probe only, a few MB), ``preprocessor_config.json`` (the
backbone's image processor, so that ``pipeline("image-classification", model=repo)`` works), ``README.md`` (the
model card) and, when the probe attends, ``attention_maps.png`` (drawn on the example image given, or on
`sample_image`). A backbone without an image processor gets one built from its config. A video probe's repository
holds its video processor (``video_preprocessor_config.json``) and, given an example video, the attention drawn frame
by frame on its centred clip.

Uploads go through `huggingface_hub.HfApi` (``create_repo`` then one ``upload_folder`` commit), so the token comes
from the usual places (``token=``, ``HF_TOKEN``, ``hf auth login``) and ``HF_ENDPOINT`` is honoured.

This is the publishing layer: it takes a loaded probe model (``model.save_pretrained``, ``model.config``, its
attention) and imports no model class, so the models can call it (``push_to_hub``) without an import cycle. A
training run's folder is published with ``AutoModelForEfficientProbing.from_pretrained(dir).push_to_hub(repo,
run_dir=dir)``: ``run_dir`` fills the card from the run's ``run_summary.json`` and takes the run's image
processor.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from huggingface_hub import CommitInfo, HfApi
from PIL import Image, ImageDraw
from transformers import ViTImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..analysis.attention_maps import count_attention_maps, save_attention_maps, save_video_attention_maps
from ..backbones import vision_config
from ..checkpoint import load_probe_processor
from ..probes.patch_grid import as_pair
from .cards import LIBRARY_NAME, ProbeCardInfo, build_model_card, card_info_from_summary

ATTENTION_MAPS_FILE = "attention_maps.png"
RUN_SUMMARY_FILE = "run_summary.json"


def _check_names_backbone(model) -> None:
    if not model.config.backbone_name_or_path:
        raise ValueError(
            "A probe repository names its backbone instead of holding it, but config.backbone_name_or_path is not "
            "set. Build the probe with `from_backbone('<hub id>')` or set the config field to the backbone's Hub id."
        )


def image_processor_from_config(config) -> ViTImageProcessor:
    """An image processor for a backbone that ships none: resize to the backbone's input size and normalise with
    the ImageNet statistics (those of the paper's recipe), so that ``pipeline`` can run the published probe."""
    height, width = as_pair(vision_config(config.backbone_config).image_size)
    return ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD
    )


def sample_image(size: int = 224) -> Image.Image:
    """The image the attention-map figure is drawn on when none is given: a few plain shapes on a gradient, drawn
    here so that the package ships no image file (deterministic, so a figure changes only when the probe does)."""
    ramp = np.linspace(40, 200, size, dtype=np.uint8)
    image = Image.fromarray(np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                                      np.full((size, size), 120, np.uint8)], axis=-1))  # fmt: skip
    draw = ImageDraw.Draw(image)
    draw.ellipse([size * 0.1, size * 0.15, size * 0.45, size * 0.5], fill=(230, 60, 50))
    draw.rectangle([size * 0.55, size * 0.5, size * 0.9, size * 0.85], fill=(40, 90, 220))
    draw.polygon([(size * 0.2, size * 0.9), (size * 0.35, size * 0.6), (size * 0.5, size * 0.9)], fill=(250, 220, 40))
    return image


def save_probe_repository(
    model,
    save_directory: str | os.PathLike,
    repo_id: str,
    *,
    card_info: ProbeCardInfo | dict | None = None,
    example_image: Image.Image | str | os.PathLike | None = None,
    image_processor=None,
    revision: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Write the files of a probe repository to ``save_directory`` (what `push_probe_to_hub` uploads).

    Args:
        model: the probe (its config must name the backbone: the weights saved are the probe's only).
        save_directory: folder to write into.
        repo_id: repository the card's usage snippet loads from.
        card_info: evaluation and training details for the model card.
        example_image: an image to draw the probe's attention maps on, for the card (by default `sample_image`);
            for a video probe a video (a file, its bytes or a `datasets` video), without which the card has no
            figure.
        image_processor: the processor of the backbone (a video probe's video processor); by default loaded from
            the backbone the config names, or for an image probe built from its config when it has none
            (`image_processor_from_config`).
        revision: branch the files are meant for (pinned in the card's snippet when not ``main``).
        token: token to read the backbone's processor and card.
    """
    save_directory = Path(save_directory)
    config = model.config
    _check_names_backbone(model)
    video = config.frames_per_clip is not None
    if image_processor is None:
        image_processor = load_probe_processor(None, config=config, token=token)
    if image_processor is None and video:
        raise ValueError(
            f"No video processor for this video probe: the backbone {config.backbone_name_or_path!r} has none. Pass "
            "image_processor= (the video processor the probe reads clips through, e.g. a training run's)."
        )
    model.save_pretrained(save_directory)  # probe only, unless the backbone was fine-tuned (then it is saved too)
    if image_processor is None:
        image_processor = image_processor_from_config(config)
        warnings.warn(
            f"The backbone {config.backbone_name_or_path!r} has no image processor: the repository gets one built "
            f"from its config (resize to {image_processor.size['height']} px, ImageNet mean and std). Pass "
            "`image_processor=` if the backbone was trained with another preprocessing.",
            UserWarning,
            stacklevel=2,
        )
    image_processor.save_pretrained(save_directory)
    attention_map = None
    if count_attention_maps(model) is not None and video:
        if example_image is not None:  # a video: its centred clip, frame by frame
            save_video_attention_maps(model, example_image, save_directory / ATTENTION_MAPS_FILE, image_processor)
            attention_map = ATTENTION_MAPS_FILE
    elif count_attention_maps(model) is not None:
        size = image_processor.size  # {"height", "width"}, or {"shortest_edge"} (e.g. DINOv2 and ConvNeXt processors)
        side = size.get("height") or size.get("shortest_edge", 224)
        figure_image = sample_image(side) if example_image is None else example_image
        save_attention_maps(model, figure_image, save_directory / ATTENTION_MAPS_FILE, image_processor)
        attention_map = ATTENTION_MAPS_FILE
    card = build_model_card(model, repo_id, card_info, revision=revision, attention_map=attention_map, token=token)
    card.save(save_directory / "README.md")
    return save_directory


def push_probe_to_hub(
    model,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    card_info: ProbeCardInfo | dict | None = None,
    example_image: Image.Image | str | os.PathLike | None = None,
    image_processor=None,
    commit_message: str = "Upload probe",
    commit_description: str | None = None,
    create_pr: bool = False,
    run_dir: str | os.PathLike | None = None,
) -> CommitInfo:
    """Create (if needed) the Hub repository ``repo_id`` and upload a probe repository to it in one commit.

    Args:
        model: the probe; its backbone is named by id and revision, not uploaded.
        repo_id: ``"user/name"`` (or ``"name"`` for the token's user).
        private: create the repository as private (ignored when it already exists).
        token: Hub token; by default the one `huggingface_hub` finds (``HF_TOKEN``, ``hf auth login``).
        revision: branch to push to (created from ``main`` if missing); ``main`` by default.
        card_info, example_image, image_processor: see `save_probe_repository`.
        commit_message, commit_description, create_pr: passed to `HfApi.upload_folder`.
        run_dir: the folder a training run saved this probe in: its ``run_summary.json`` fills the card (fields of
            ``card_info``, a dict here, override them) and its image processor is the repository's.

    Returns:
        The `huggingface_hub.CommitInfo` of the commit (``.commit_url``, ``.oid``, ``.repo_url``).
    """
    _check_names_backbone(model)  # before anything is created on the Hub
    if run_dir is not None:
        card_info, image_processor = _from_training_run(Path(run_dir), card_info, image_processor, model.config, token)
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=importlib.metadata.version(LIBRARY_NAME))
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_probe_repository(
            model,
            folder,
            repo_id,
            card_info=card_info,
            example_image=example_image,
            image_processor=image_processor,
            revision=revision,
            token=token,
        )
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message,
            commit_description=commit_description,
            create_pr=create_pr,
        )


def _from_training_run(run_dir: Path, card_info: dict | None, image_processor, config, token):
    """The card details and the image (a video run's video) processor of the probe a training run saved in
    ``run_dir`` (else its backbone's)."""
    summary_path = run_dir / RUN_SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if isinstance(card_info, ProbeCardInfo):
        raise TypeError("With run_dir, give card_info as a dict of the fields that override the run summary's.")
    if image_processor is None:
        image_processor = load_probe_processor(str(run_dir), config=config, token=token)
    return card_info_from_summary(summary, **(card_info or {})), image_processor
