"""Video data through the training path: a folder of synthetic videos written with torchcodec (a square moving in one
of three directions: the class), tiny random video backbones, and the default protocol from the token cache and
live. Clips are sampled as the run says (frames per clip, stride, clips per video), every evaluation clip is cached
once, and a video's clips are classified together by the mean of their logits."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from conftest import DIRECTIONS, moving_square, tiny_backbone, write_video
from test_cache import single_thread  # noqa: F401
from transformers import VideoMAEImageProcessor

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.cache import TokenCache, plan
from hf_efficient_probing.demo import embedded_training_arguments
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments, ProbeArguments
from hf_efficient_probing.training.data import TRAIN, VALIDATION, DataError, undecoded
from hf_efficient_probing.training.engine import GridSplits, train_grid
from hf_efficient_probing.training.job import ProbingJob
from hf_efficient_probing.training.prepared import SELECTION, prepare_data
from hf_efficient_probing.training.protocols import GRID_SPLITS, extraction_options
from hf_efficient_probing.training.transforms import TrainingClipTransform
from hf_efficient_probing.video import ClipSampling


def video_processor():
    return VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def training_arguments(output_dir, **overrides):
    return embedded_training_arguments(str(output_dir), num_train_epochs=2, warmup_epochs=0, **overrides)


def run(tmp_path, name, folder, family="videomae", probes=("ep",), backbone=None, grid=([-1], [1e-2]), **data):
    data_args = DataArguments(dataset_name=folder, token_cache_dir=str(tmp_path / "tokens"), **data)
    linear = {"linear_features": "gap"} if "linear" in probes else {}  # no [CLS] in these families
    layers, rates = grid
    probe_args = ProbeArguments(
        probe=list(probes), num_queries=4, feature_layers=layers, learning_rates=rates, **linear
    )
    backbone = backbone or tiny_backbone(family)
    job = ProbingJob.from_arguments(
        ModelArguments(), data_args, probe_args, training_arguments(tmp_path / name), (backbone, video_processor())
    )
    return job, job.run()


def test_a_video_folder_is_read_as_clips_of_its_videos(video_folder):
    clips = ClipSampling(frames_per_clip=4, frame_stride=2, clips_per_video=3)
    data = prepare_data(DataArguments(dataset_name=video_folder), video_processor(), clips=clips)
    assert data.class_names == sorted(DIRECTIONS) and len(data.splits[TRAIN]) == 18
    item = data.images(VALIDATION)[0]
    assert item["pixel_values"].shape == (3, 4, 3, 32, 32) and item["labels"] == data.splits[VALIDATION][0]["label"]
    rows = data.images(VALIDATION, per_clip=True)
    assert len(rows) == 3 * len(data.splits[VALIDATION])
    assert all(torch.equal(rows[clip]["pixel_values"], item["pixel_values"][clip]) for clip in range(3))
    drawn = data.images(TRAIN, data.train_transform((0.3, 1.0)))[0]["pixel_values"]
    assert drawn.shape == (4, 3, 32, 32) and drawn.dtype == torch.float32
    assert "clips of 4 frames every 2" in data.info["clips"]["sampling"]
    right = data.splits[TRAIN]["label"].index(data.class_names.index("right"))
    starts = {first_column(data.images(TRAIN, RawClip())[right]["pixel_values"]) for _ in range(12)}
    assert len(starts) > 1, "live training draws each clip at a random start"


class RawClip(TrainingClipTransform):
    """A training transform that hands the decoded frames over as they are."""

    def __init__(self):
        pass

    def __call__(self, clip):
        return clip


def first_column(clip: torch.Tensor) -> int:
    """The square's left edge in the first frame of a clip of a "right" video (which frame the clip starts at)."""
    return int((clip[0].float().mean(dim=0).amax(dim=0) > 127).nonzero()[0])


def test_an_image_backbone_given_videos_and_a_video_backbone_given_images_fail_early(video_folder, tmp_path):
    with pytest.raises(DataError, match="holds videos, but the backbone reads images. Probe videos with a video"):
        prepare_data(DataArguments(dataset_name=video_folder), video_processor())
    images = tmp_path / "images"
    for split in (TRAIN, VALIDATION):
        for label in ("a", "b"):
            (images / split / label).mkdir(parents=True)
            for index in range(2):
                from PIL import Image

                Image.new("RGB", (8, 8), (index * 50, 0, 0)).save(images / split / label / f"{index}.png")
    with pytest.raises(DataError, match="The run reads video clips, but column .image. holds Image values"):
        prepare_data(DataArguments(dataset_name=str(images)), video_processor(), clips=ClipSampling(4))
    with pytest.raises(
        ValueError,
        match="--clips_per_video is for video data; this .vit. backbone reads images, or videos frame by frame",
    ):
        ProbingJob.from_arguments(
            ModelArguments(),
            DataArguments(dataset_name=str(images), clips_per_video=2),
            ProbeArguments(probe=["ep"]),
            training_arguments(tmp_path / "out"),
            (tiny_backbone("vit"), video_processor()),
        )


def test_the_default_protocol_trains_ep_linear_and_the_vjepa2_probe_on_cached_clips(video_folder, tmp_path):
    sampling = dict(frame_stride=2, clips_per_video=2)
    kinds = ("ep", "linear", "vjepa2")
    job, metrics = run(tmp_path, "run", video_folder, "vjepa2", kinds, grid=([1, 2], [1e-2, 1e-1]), **sampling)
    assert set(metrics) == set(kinds) and len(job.members) == 3 * 2 * 2, "kinds x layers x rates, one pass"
    assert all(
        m["eval_samples"] == 6 and m["selection_samples"] == 6 and m["train_samples"] == 24 for m in metrics.values()
    )
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["clips"] == {
        "frames_per_clip": 4,
        "frame_stride": 2,
        "clips_per_video": 2,
        "sampling": summary["clips"]["sampling"],
    }
    assert summary["token_cache"]["images"] == (12 + 6 + 6) * 2, "every clip of every video extracted once"
    caches = [TokenCache(path) for path in (tmp_path / "tokens").iterdir()]
    assert sorted(cache.num_rows for cache in caches) == [12, 12, 24], "one cache a split, every layer of the grid"
    assert all(cache.feature_layers == (1, 2) for cache in caches)
    assert all(
        json.loads(cache.key["preprocessing"])["clips"] == {"frames_per_clip": 4, **sampling} for cache in caches
    )
    assert all(tuple(cache.grid_size) == (2, 4, 4) for cache in caches)
    again, _ = run(
        tmp_path, "again", video_folder, "vjepa2", ("ep",), backbone=job.backbone, grid=([1, 2], [1e-2]), **sampling
    )
    assert json.loads((tmp_path / "again" / "run_summary.json").read_text())["token_cache"]["reused"]


def grid_job(tmp_path, name, video_folder, **data):
    data_args = DataArguments(dataset_name=video_folder, token_cache_dir=str(tmp_path / "tokens"), **data)
    probe_args = ProbeArguments(probe=["ep"], num_queries=4, feature_layers=[-1], learning_rates=[1e-2, 1e-1])
    backbone = tiny_backbone("videomae")
    inputs = (ModelArguments(), data_args, probe_args, training_arguments(tmp_path / name))
    return ProbingJob.from_arguments(*inputs, (backbone, video_processor()))


def test_a_cached_run_equals_a_live_run_on_the_same_clips(video_folder, tmp_path):
    sampling = dict(frame_stride=2, clips_per_video=2)
    cached_job, live_job = (
        grid_job(tmp_path, "cached", video_folder, **sampling),
        grid_job(tmp_path, "live", video_folder, **sampling),
    )
    options = extraction_options(str(tmp_path / "tokens"), cached_job.args)
    reader, model = cached_job.grid.reader, cached_job.grid.member_models[0]
    caches = {
        s: cached_job.data.token_cache(s, model, options, storage=("float32", "float32"), reader=reader)
        for s in GRID_SPLITS
    }
    cached = train_grid(
        cached_job.grid,
        cached_job.args,
        GridSplits(*(cached_job.data.cached_examples(c, s) for s, c in caches.items())),
    )
    data = live_job.data  # the same clips, read live: every evaluation clip of a training video a sample
    live_splits = GridSplits(data.images(TRAIN, per_clip=True), data.images(SELECTION), data.images(VALIDATION))
    live = train_grid(live_job.grid, live_job.args, live_splits)
    assert len(live_splits.train) == len(caches[TRAIN].dataset()) == 24 and len(live_splits.evaluation) == 6
    for head, twin in zip(cached_job.grid.heads, live_job.grid.heads, strict=True):
        for (name, value), other in zip(head.state_dict().items(), twin.state_dict().values(), strict=True):
            torch.testing.assert_close(value, other, rtol=1e-4, atol=1e-5, msg=name)
    assert cached.metrics["ep"]["eval_accuracy"] == live.metrics["ep"]["eval_accuracy"]
    assert cached.metrics["ep"]["learning_rate"] == live.metrics["ep"]["learning_rate"]


def test_clips_of_a_video_are_classified_by_the_mean_of_their_logits(video_folder, tmp_path):
    job, metrics = run(tmp_path, "run", video_folder, frame_stride=2, clips_per_video=3)
    model = AutoModelForEfficientProbing.from_pretrained(tmp_path / "run").eval()  # with its backbone
    evaluation = job.data.images(VALIDATION)
    right = 0
    with torch.no_grad():
        for index in range(len(evaluation)):
            item = evaluation[index]
            assert item["pixel_values"].shape == (3, 4, 3, 32, 32)
            by_hand = sum(model(pixel_values=clip[None]).logits[0] for clip in item["pixel_values"]) / 3
            together = model(pixel_values=item["pixel_values"][None]).logits[0]
            torch.testing.assert_close(together, by_hand)
            right += int(by_hand.argmax()) == item["labels"]
    assert metrics["eval_accuracy"] == pytest.approx(right / len(evaluation))
    assert metrics["eval_samples"] == len(evaluation) == 6, "videos, not clips"


@pytest.fixture
def folder_with_bad_videos(video_folder, tmp_path):
    """The video folder plus an undecodable file in train and a video too short for one clip in validation."""
    root = tmp_path / "bad-videos"
    shutil.copytree(video_folder, root)
    (root / TRAIN / "right" / "broken.mp4").write_bytes(b"not a video" * 100)
    write_video(root / VALIDATION / "down" / "short.mp4", moving_square("down", 0, num_frames=3))
    return str(root)


@pytest.mark.parametrize("flag", ["skip_unreadable", "skip_unreadable_images"])
def test_unreadable_or_too_short_videos_are_named_or_skipped_and_counted(folder_with_bad_videos, flag):
    clips = ClipSampling(frames_per_clip=4)
    data = prepare_data(DataArguments(dataset_name=folder_with_bad_videos), video_processor(), clips=clips)
    paths = [row["path"] for row in undecoded(data.splits[TRAIN], "video")["video"]]
    with pytest.raises(
        DataError,
        match=rf"index {paths.index(next(p for p in paths if p.endswith('broken.mp4')))} of the train split.*broken\.mp4.*--skip_unreadable",
    ):
        for index in range(len(data.splits[TRAIN])):
            data.images(TRAIN)[index]
    with pytest.raises(DataError, match=r"short\.mp4\): it has 3 frames, too short for one clip of 4 frames"):
        for index in range(len(data.splits[VALIDATION])):
            data.images(VALIDATION)[index]
    kept = prepare_data(
        DataArguments(dataset_name=folder_with_bad_videos, **{flag: True}), video_processor(), clips=clips
    )
    assert kept.info["skipped_unreadable_videos"] == {TRAIN: 1, VALIDATION: 1}
    assert (len(kept.splits[TRAIN]), len(kept.splits[VALIDATION])) == (18, 6)


def test_the_plan_prices_every_clip_of_every_video(video_folder, saved_backbone, capsys):
    argv = ["--model_name_or_path", saved_backbone("videomae"), "--dataset_name",
            video_folder, "--clips_per_video", "3", "--batch_size", "2", "--measure_batches", "1",
            "--backbone_dtype", "float32"]  # fmt: skip
    assert plan.main(argv) == 0
    out = capsys.readouterr().out
    assert "Videos: 24 (train 18, validation 6), 3 clip(s) each: 72 clips" in out
    assert "Tokens per clip: 32 (32 patches), 32 channels per layer" in out  # 2 x 4 x 4 tubelets of a 4-frame clip
    # 72 clips x 32 tokens x 32 channels x 2 or 4 bytes, plus 72 int64 labels
    assert re.search(r"requested \[-1\]\s+148\.0 KB\s+295\.5 KB", out)
    assert re.search(r"per clip, requested\s+2\.1 KB\s+4\.1 KB", out) and "per image" not in out  # a cache row: a clip
    assert re.search(r"Measured here: [\d.]+ clips/s per process", out)


def test_live_training_draws_augmented_clips_and_evaluates_every_clip(video_folder, tmp_path):
    job, metrics = run(tmp_path, "live", video_folder, "timesformer", use_token_cache=False, clips_per_video=2)
    summary = json.loads((tmp_path / "live" / "run_summary.json").read_text())
    assert (
        "each clip drawn at a random start" in summary["augmentation"] and "scale=(0.3, 1.0)" in summary["augmentation"]
    )
    assert metrics["train_samples"] == 12 and metrics["eval_samples"] == 6 and not (tmp_path / "tokens").exists()
    assert "clips of 4 frames every 1" in summary["preprocessing"] and "centre-crop 32x32" in summary["preprocessing"]


def test_hf_probe_train_reads_a_video_folder_as_clips(video_folder, tmp_path):
    """The command line (``hf-probe train``, ``examples/run_probing.py``) on a saved video backbone and a video
    folder: the clips are sampled as its flags say, and every probe reads them."""
    from transformers import VideoMAEVideoProcessor

    from hf_efficient_probing import cli

    backbone = tmp_path / "videomae"
    tiny_backbone("videomae").save_pretrained(backbone)
    VideoMAEVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(backbone)
    cli.train(["--model_name_or_path", str(backbone), "--dataset_name", video_folder, "--probe", "ep",
               "--num_queries", "4", "--feature_layers", "-1", "--learning_rates", "1e-2", "--frame_stride", "2",
               "--clips_per_video", "2", "--num_train_epochs", "1", "--warmup_epochs", "0", "--use_cpu", "true",
               "--dataloader_num_workers", "0", "--report_to", "none", "--disable_tqdm", "true",
               "--token_cache_dir", str(tmp_path / "tokens"), "--output_dir", str(tmp_path / "out")])  # fmt: skip
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["clips"]["clips_per_video"] == 2 and summary["clips"]["frame_stride"] == 2
    assert summary["token_cache"]["images"] == (12 + 6 + 6) * 2, "every clip of every video extracted once"
