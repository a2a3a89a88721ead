"""The analysis commands: ``hf-probe attention-maps`` and ``hf-probe analyze`` load a probe and run the analysis.

Loading a probe is the one thing here that needs the model classes; the analysis itself (`attention_maps`,
`query_analysis`) works on any loaded probe model.

    hf-probe attention-maps --model user/probe --image cat.jpg --output maps.png
    hf-probe attention-maps --model user/video-probe --video clip.mp4 --frame_stride 4 --output maps.png
    hf-probe analyze --model user/probe --data_dir val_images/ --output_dir analysis/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..checkpoint import load_probe_processor
from ..images import decode_image
from ..modeling_probing import AutoModelForEfficientProbing
from .attention_maps import save_attention_maps, save_video_attention_maps
from .query_analysis import contribution_table, query_contributions, write_analysis


def load_probe_and_processor(parser: argparse.ArgumentParser, model_id: str, revision: str | None):
    """The probe ``model_id`` names and the image (video, for a video probe) processor saved with it, or its
    backbone's."""
    model = AutoModelForEfficientProbing.from_pretrained(model_id, revision=revision)
    video = model.config.frames_per_clip is not None
    processor = load_probe_processor(model_id, revision, model.config)
    if processor is None:
        kind = "a video processor (video_preprocessor_config.json)" if video else "an image processor"
        parser.error(f"Neither {model_id} nor its backbone has {kind}.")
    return model, processor


def attention_maps(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description="Draw a probe's attention maps over an image as a PNG grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="probe directory or Hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="image file")
    source.add_argument("--video", help="video file, for a video probe: its centred clip is drawn frame by frame")
    parser.add_argument("--output", default="attention_maps.png", help="PNG file to write")
    parser.add_argument("--revision", default=None, help="revision of the probe on the Hub")
    parser.add_argument("--columns", type=int, default=8, help="panels per row (images)")
    parser.add_argument("--frame_stride", type=int, default=1, help="frames between the clip's frames (videos)")
    args = parser.parse_args(argv)
    model, processor = load_probe_and_processor(parser, args.model, args.revision)
    if (args.video is not None) != (model.config.frames_per_clip is not None):
        parser.error(f"{args.model} probes {'videos' if model.config.frames_per_clip else 'images'}: pass --"
                     f"{'video' if model.config.frames_per_clip else 'image'}.")  # fmt: skip
    if args.video is not None:
        path = save_video_attention_maps(model, args.video, args.output, processor, frame_stride=args.frame_stride)
    else:
        path = save_attention_maps(model, args.image, args.output, processor, columns=args.columns)
    print(f"Wrote {path}")
    return path


def _image_batches(dataset, image_processor, batch_size: int, image_column: str, label_column: str):
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        images = [
            decode_image(image, f"the image at index {start + offset} ({image.get('path') or 'in memory'})")
            for offset, image in enumerate(batch[image_column])
        ]
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        yield pixel_values, torch.as_tensor(batch[label_column])


def analyze(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(
        description="Per-query attention entropy and accuracy drop of an EP probe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="probe directory or Hub id")
    parser.add_argument("--revision", default=None, help="revision of the probe on the Hub")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="an image folder (one sub-folder per class, in the probe's label order)")
    source.add_argument("--dataset", help="a data set on the Hub, with the probe's labels")
    parser.add_argument("--dataset_config", default=None, help="configuration of --dataset")
    parser.add_argument("--split", default="validation", help="split of --dataset")
    parser.add_argument("--image_column", default="image", help="column of the images")
    parser.add_argument("--label_column", default="label", help="column of the labels")
    parser.add_argument("--max_samples", type=int, default=None, help="analyse the first N images only")
    parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--output_dir", default="query_analysis", help="where the table and figures go")
    args = parser.parse_args(argv)

    from datasets import Image, load_dataset

    if args.data_dir:
        dataset = load_dataset("imagefolder", data_dir=args.data_dir, split="train")
    else:
        dataset = load_dataset(args.dataset, args.dataset_config, split=args.split)
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    dataset = dataset.cast_column(args.image_column, Image(decode=False))  # decoded, and checked, one by one
    model, processor = load_probe_and_processor(parser, args.model, args.revision)
    batches = _image_batches(dataset, processor, args.batch_size, args.image_column, args.label_column)
    analysis = query_contributions(model, batches)
    paths = write_analysis(analysis, args.output_dir)
    print(contribution_table(analysis))
    print("Wrote " + ", ".join(str(path) for path in paths.values()))
    return paths
