"""An image backbone reading video clips frame by frame (``frames_per_clip`` on an image backbone's probe config,
``--frames_per_clip`` on a run): the tokens it gives, what it refuses, its cache and the default protocol on it."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import random_clips, tiny_backbone, tiny_backbone_config, write_video
from test_cache import single_thread  # noqa: F401
from test_video_training import training_arguments, video_processor

import hf_efficient_probing as hep
from hf_efficient_probing.backbones import TokenReader
from hf_efficient_probing.cache import TokenCache, plan
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments, ProbeArguments
from hf_efficient_probing.training.data import TRAIN, VALIDATION, DataError
from hf_efficient_probing.training.engine import GridSplits, train_grid
from hf_efficient_probing.training.job import ProbingJob
from hf_efficient_probing.training.prepared import SELECTION, prepare_data
from hf_efficient_probing.training.protocols import GRID_SPLITS, extraction_options


def test_a_clip_read_frame_by_frame_is_its_frames_read_as_images():
    """Every frame's patches in frame order on a (frames, rows, columns) grid, led by the mean of the frames' [CLS]
    tokens: what each frame gives as an image."""
    backbone = tiny_backbone("vit")
    clips = random_clips(batch=2, frames=3)
    reader = TokenReader(backbone.config, [1, 2], "all", frame_by_frame=True)
    with torch.no_grad():
        read = reader(backbone, clips)
        frames = [TokenReader(backbone.config, [1, 2], "all")(backbone, clips[:, t]).tokens for t in range(3)]
    assert read.grid_size == (3, 4, 4) and read.num_prefix_tokens == 1 and read.tokens.shape == (2, 1 + 48, 64)
    torch.testing.assert_close(read.tokens[:, 0], torch.stack([frame[:, 0] for frame in frames]).mean(0))
    for t, frame in enumerate(frames):
        torch.testing.assert_close(read.tokens[:, 1 + 16 * t : 1 + 16 * (t + 1)], frame[:, 1:])
    patches = TokenReader(backbone.config, [2], "patch", frame_by_frame=True)(backbone, clips)
    assert patches.num_prefix_tokens == 0 and patches.tokens.shape == (2, 48, 32)


def test_clips_for_an_image_backbone_need_frame_by_frame_and_it_needs_clips():
    backbone = tiny_backbone("vit")
    with pytest.raises(ValueError, match=r"'vit' is an image backbone, but it was given video clips.*frame by frame"):
        TokenReader(backbone.config, [-1])(backbone, random_clips())
    with pytest.raises(ValueError, match=r"reads clips \[B, T, 3, H, W\] frame by frame .* shape \(2, 3, 32, 32\)"):
        TokenReader(backbone.config, [-1], frame_by_frame=True)(backbone, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="'videomae' is a video backbone: it reads clips itself"):
        TokenReader(tiny_backbone_config("videomae"), [-1], frame_by_frame=True)


def test_a_frame_by_frame_probe_records_its_clips_and_refuses_others(tmp_path):
    backbone = tiny_backbone("vit")
    model = hep.AutoModelForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4, frames_per_clip=3)
    assert model.config.reads_frames and model.config.clip_token_grid == (3, 4, 4)
    assert model.token_reader.frame_by_frame
    with torch.no_grad():
        read = model.read_tokens(random_clips(frames=3))
        assert model.token_layout(read.tokens) == (0, (3, 4, 4)), "cached tokens get the clips' grid"
        with pytest.raises(ValueError, match=r"reads clips of 3 frames \(config.frames_per_clip\).* 4 frames"):
            model(pixel_values=random_clips(frames=4))
        two = random_clips(batch=2, frames=3, seed=5)
        together = model.eval()(pixel_values=two[None]).logits[0]  # [B=1, K=2 clips, T, 3, H, W]
        by_hand = (model(pixel_values=two[:1]).logits[0] + model(pixel_values=two[1:]).logits[0]) / 2
        torch.testing.assert_close(together, by_hand)
    model.save_pretrained(tmp_path / "probe")
    again = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    assert again.config.frames_per_clip == 3 and again.token_reader.frame_by_frame
    images = hep.AutoModelForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4)
    assert not images.config.reads_frames and images.config.clip_token_grid is None


def frame_job(tmp_path, name, folder, probes=("ep",), rates=(1e-2,), **data):
    data_args = DataArguments(
        dataset_name=folder, token_cache_dir=str(tmp_path / "tokens"), frames_per_clip=2, frame_stride=2, **data
    )
    probe_args = ProbeArguments(probe=list(probes), num_queries=4, feature_layers=[1, 2], learning_rates=list(rates))
    inputs = (ModelArguments(), data_args, probe_args, training_arguments(tmp_path / name))
    return ProbingJob.from_arguments(*inputs, (tiny_backbone("vit"), video_processor()))


def test_the_default_protocol_reads_videos_frame_by_frame_through_an_image_backbone(video_folder, tmp_path):
    job = frame_job(tmp_path, "run", video_folder, ("ep", "linear"), (1e-2, 1e-1), clips_per_video=2)
    metrics = job.run()
    assert set(metrics) == {"ep", "linear"} and len(job.members) == 2 * 2 * 2, "kinds x layers x rates, one pass"
    assert all(m["eval_samples"] == 6 and m["selection_samples"] == 6 for m in metrics.values()), "videos"
    assert all(m["train_samples"] == 24 for m in metrics.values()), "12 training videos of 2 cached clips"
    steps_per_epoch = 24 // job.args.per_device_train_batch_size
    assert job.args.eval_steps == steps_per_epoch, "selection once an epoch of clips, not of videos"
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["clips"]["frames_per_clip"] == 2 and summary["token_cache"]["images"] == (12 + 6 + 6) * 2
    assert "bootstrap over 6 evaluation videos" in metrics["ep"]["interval_method"]
    assert "48 clips extracted" in (tmp_path / "run" / "run_summary.md").read_text()
    caches = [TokenCache(path) for path in (tmp_path / "tokens").iterdir()]
    assert sorted(cache.num_rows for cache in caches) == [12, 12, 24]
    assert all(tuple(cache.grid_size) == (2, 4, 4) and cache.num_prefix_tokens == 1 for cache in caches)
    assert all(json.loads(c.key["preprocessing"])["clips"]["frames_per_clip"] == 2 for c in caches)
    model = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "run" / "linear").eval()
    assert model.config.frames_per_clip == 2 and model.config.token_selection == "all"  # the frames' mean [CLS]
    evaluation, right = job.data.images(VALIDATION), 0
    with torch.no_grad():
        for index in range(len(evaluation)):
            item = evaluation[index]
            right += int(model(pixel_values=item["pixel_values"][None]).logits[0].argmax()) == item["labels"]
    assert metrics["linear"]["eval_accuracy"] == pytest.approx(right / len(evaluation)), "the saved probe is the run's"


def test_a_frame_by_frame_cached_run_equals_a_live_run_on_the_same_clips(video_folder, tmp_path):
    cached_job = frame_job(tmp_path, "cached", video_folder, rates=(1e-2, 1e-1), clips_per_video=2)
    live_job = frame_job(tmp_path, "live", video_folder, rates=(1e-2, 1e-1), clips_per_video=2)
    options = extraction_options(str(tmp_path / "tokens"), cached_job.args)
    reader, model = cached_job.grid.reader, cached_job.grid.member_models[0]
    assert reader.frame_by_frame
    caches = {
        s: cached_job.data.token_cache(s, model, options, storage=("float32", "float32"), reader=reader)
        for s in GRID_SPLITS
    }
    splits = GridSplits(*(cached_job.data.cached_examples(c, s) for s, c in caches.items()))
    cached = train_grid(cached_job.grid, cached_job.args, splits)
    data = live_job.data
    live_splits = GridSplits(data.images(TRAIN, per_clip=True), data.images(SELECTION), data.images(VALIDATION))
    live = train_grid(live_job.grid, live_job.args, live_splits)
    for head, twin in zip(cached_job.grid.heads, live_job.grid.heads, strict=True):
        for (name, value), other in zip(head.state_dict().items(), twin.state_dict().values(), strict=True):
            torch.testing.assert_close(value, other, rtol=1e-4, atol=1e-5, msg=name)
    assert cached.metrics["ep"]["eval_accuracy"] == live.metrics["ep"]["eval_accuracy"]


def test_videos_for_an_image_backbone_ask_for_frames_per_clip(video_folder, tmp_path):
    with pytest.raises(DataError, match=r"read them frame by frame through this image backbone \(--frames_per_clip"):
        prepare_data(DataArguments(dataset_name=video_folder), video_processor())
    with pytest.raises(ValueError, match="--frame_stride is for video data; .* when --frames_per_clip is given"):
        ProbingJob.from_arguments(
            ModelArguments(),
            DataArguments(dataset_name=video_folder, frame_stride=2),
            ProbeArguments(probe=["ep"]),
            training_arguments(tmp_path / "out"),
            (tiny_backbone("vit"), video_processor()),
        )


def test_the_plan_prices_clips_read_frame_by_frame(video_folder, saved_backbone, capsys):
    argv = ["--model_name_or_path", saved_backbone("vit"), "--dataset_name", video_folder, "--frames_per_clip", "3",
            "--clips_per_video", "2", "--batch_size", "2", "--measure_batches", "1", "--backbone_dtype", "float32"]  # fmt: skip
    assert plan.main(argv) == 0
    out = capsys.readouterr().out
    assert "Videos: 24 (train 18, validation 6), 2 clip(s) each: 48 clips" in out
    assert "Tokens per clip: 49 (48 patches + 1 [CLS]), 32 channels per layer" in out  # 3 frames of 4 x 4 patches
    assert re.search(r"Measured here: [\d.]+ clips/s per process", out)


def test_a_frame_by_frame_probe_draws_its_attention_on_every_frame(tmp_path, monkeypatch):
    from transformers import VideoMAEVideoProcessor

    from hf_efficient_probing.analysis import attention_maps
    from hf_efficient_probing.analysis.attention_maps import probe_attention_maps, save_video_attention_maps

    torch.manual_seed(0)
    model = hep.AutoModelForEfficientProbing.from_backbone(
        tiny_backbone("vit"), num_labels=3, num_queries=4, frames_per_clip=3
    ).eval()
    logits, maps = probe_attention_maps(model, random_clips(frames=3))
    assert maps.shape == (2, 4, 3, 4, 4), "a map per query and frame"
    drawn = {}
    plot = attention_maps.plot_video_attention_maps
    monkeypatch.setattr(
        attention_maps,
        "plot_video_attention_maps",
        lambda frames, maps, **kw: drawn.update(frames=frames) or plot(frames, maps, **kw),
    )
    processor = VideoMAEVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    frames = (torch.rand(12, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    write_video(tmp_path / "clip.mp4", frames)
    output = save_video_attention_maps(model, tmp_path / "clip.mp4", tmp_path / "maps.png", processor, frame_stride=2)
    assert output.is_file() and drawn["frames"].shape[:3] == (3, 32, 32), "every frame drawn, not every other"


def test_a_video_probe_repository_holds_its_video_processor_and_draws_on_an_example_video(tmp_path, saved_backbone):
    from transformers import VideoMAEVideoProcessor

    from hf_efficient_probing.hub.push import save_probe_repository

    model = hep.AutoModelForEfficientProbing.from_backbone(
        saved_backbone("vit"), num_labels=3, num_queries=4, frames_per_clip=3
    )
    with pytest.raises(ValueError, match="No video processor for this video probe"):
        save_probe_repository(model, tmp_path / "bare", "user/video-probe")
    assert not (tmp_path / "bare").exists(), "nothing written before the error"
    processor = VideoMAEVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    frames = (torch.rand(12, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    video = write_video(tmp_path / "clip.mp4", frames)
    save_probe_repository(
        model, tmp_path / "repo", "user/video-probe", example_image={"path": str(video)}, image_processor=processor
    )
    files = {path.name for path in (tmp_path / "repo").iterdir()}
    assert {"video_preprocessor_config.json", "attention_maps.png"} <= files and "preprocessor_config.json" not in files
    save_probe_repository(model, tmp_path / "plain", "user/video-probe", image_processor=processor)
    assert not (tmp_path / "plain" / "attention_maps.png").exists(), "no example video: no figure"
