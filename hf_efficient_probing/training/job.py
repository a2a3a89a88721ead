"""The job: one probing run, resolved once at the boundary from the parsed arguments (`hf-probe train`).

:meth:`ProbingJob.from_arguments` checks the arguments against the chosen protocol (a flag the protocol does not read
is an error that names the protocol that reads it), loads the backbone and the data, and resolves everything a run
decides before it trains: the probe kinds and their config fields, the layers (non-negative), the recipe, the
learning-rate grid and its members, where the tokens come from. Every later step reads the job; nothing re-resolves.
:meth:`ProbingJob.identity` is what the run trains on and how, recorded in its checkpoints so that only the same run
resumes them. :func:`run_probing` is the whole job.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from transformers import AutoImageProcessor, AutoVideoProcessor

from ..backbones import backbone_family, backbone_states, load_backbone, resolve_layers, vision_config
from ..cache import backbone_identity
from ..cache.key import resolve_compute_dtype
from ..configuration_probing import probe_config_class
from ..probes import probe_kind
from ..video import ClipSampling
from .arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments
from .data import TRAIN
from .episodes import Episode
from .figures import BootstrapOptions
from .grid import GridMember, ProbingGridModel, grid_members, seeded_members
from .multilabel import MULTI_LABEL_METRICS
from .prepared import SELECTION, PreparedData, prepare_data, with_episodes
from .protocols import run_default_protocol, run_episodes, run_knn, run_paper_protocol
from .recipes import (
    DEFAULT_BASE_LEARNING_RATES,
    PROTOCOLS,
    default_feature_layers,
    effective_batch_size,
    grid_arguments,
    recipe_identity,
    resolve_recipe,
    scaled_grid,
)
from .rungs import Rungs, edge_reserves
from .transforms import VIDEO_CROP_SCALE_MIN, suited_crop_scale_min

PAPER_CROP_SCALE_MIN = 0.08
_PAPER_ONLY = {
    "probe": ("layerwise", "lora_rank"),
    "training": ("learning_rate", "base_learning_rate", "early_stopping_patience"),
}
_GRID_REVISION = ("prune", "prune_rungs", "prune_keep", "prune_margin", "extend_grid_edge")
_DEFAULT_ONLY = {
    "probe": ("learning_rates", "seeds", *_GRID_REVISION),
    "data": ("selection_fraction", "selection_rule", "episodes"),
}
_WHOLE_SPLIT_ONLY = ("episodes", "shots_per_class", "train_fraction", "skip_unreadable", "skip_unreadable_images")
_KNN_ONLY = ("knn_features", "knn_k", "knn_temperatures")
_VIDEO_ONLY = ("frames_per_clip", "frame_stride", "clips_per_video")


@dataclass(frozen=True)
class TokenSource:
    """Where a run's tokens come from: the token cache (``cached``; its root, the backbone's compute precision and
    the tokens' storage type), or the live backbone with augmentation over ``crop_scale``."""

    cached: bool
    cache_root: str | None = None
    compute_dtype: str = "auto"
    crop_scale: tuple[float, float] | None = None
    token_dtype: str = "float16"
    cache_per_node: bool = False


@dataclass
class ProbingJob:
    """One probing run, resolved: what every step reads.

    Attributes:
        protocol: ``"default"`` (a grid chosen on held-out train data) or ``"paper"`` (one probe, the paper's recipe).
        backbone, processor: the frozen backbone and its image processor.
        revision: the backbone's revision, recorded in every probe config.
        data: the prepared data; under the default protocol with its ``selection`` split held out of train.
        kinds: per probe kind, the config fields the arguments give it.
        layers: the layers read (non-negative): each one a grid member (default), or concatenated (paper).
        args: the training arguments with the protocol's recipe filled (and, for a grid, its evaluation cadence).
        grid: the default protocol's grid of probes (kind x layer x learning rate, with its reserve members beyond
            the edges when the rungs extend it), built on the backbone; ``None`` under the paper's.
        rungs: where the default protocol's grid stops members out of contention and extends its edge; ``None``
            for the paper's protocol, or when the grid trains every member to the end.
        episodes: the low-shot episodes (``--episodes``): each trains its own grid (``grid`` is the first one's),
            on its rows of ``data``'s train split (the union of every episode's); ``()`` without.
        tokens: where the tokens come from.
        probe_args: the probe arguments as given (LoRA, layer-wise, k-NN settings).
    """

    protocol: str
    backbone: Any
    processor: Any
    revision: str | None
    data: PreparedData
    kinds: dict[str, dict]
    layers: tuple[int, ...]
    args: ProbingTrainingArguments
    grid: ProbingGridModel | None
    rungs: Rungs | None
    tokens: TokenSource
    probe_args: ProbeArguments = field(repr=False)
    episodes: tuple[Episode, ...] = ()

    @classmethod
    def from_arguments(
        cls,
        model_args: ModelArguments,
        data_args: DataArguments,
        probe_args: ProbeArguments,
        training_args: ProbingTrainingArguments,
        backbone_and_processor: tuple | None = None,
        data: PreparedData | None = None,
    ) -> ProbingJob:
        """Check the arguments, load what they name (unless ``backbone_and_processor`` and ``data`` are given) and
        resolve the run."""
        if isinstance(probe_args.probe, str):  # ProbeArguments(probe="ep") from Python
            probe_args = dataclasses.replace(probe_args, probe=[probe_args.probe])
        check_arguments(data_args, probe_args, training_args)
        paper = probe_args.protocol == "paper"
        rungs = None if paper else grid_rungs(probe_args)
        backbone, processor = backbone_and_processor or load_backbone_and_processor(model_args)
        clips = clip_sampling(backbone.config, data_args)
        if clips is not None and probe_args.knn_eval:
            raise ValueError("--knn_eval reads images only; drop it for a video data set.")
        data = data or prepare_data(data_args, processor, hub=model_args.hub_kwargs, clips=clips)
        kinds = probe_config_kwargs(probe_args)
        if data.is_video:  # every probe reads the clips the run samples, and refuses others
            kinds = {kind: {"frames_per_clip": data.clips.frames_per_clip, **fields} for kind, fields in kinds.items()}
        layers = probe_args.feature_layers or ([-1] if paper else default_feature_layers(_num_layers(backbone)))
        layers = resolve_layers(backbone.config, layers, concatenated=paper)
        if data.multi_label is not None and probe_args.knn_eval:
            raise ValueError(
                "--knn_eval classifies by a vote of the nearest training images' single labels; this data set is "
                "multi-label. Drop --knn_eval."
            )
        if data.is_video and (probe_args.seeds is not None or data_args.episodes is not None):
            raise ValueError("--seeds and --episodes are not supported on video data yet. Run once per --seed instead.")
        if data.multi_label is not None and data_args.episodes is not None:
            raise ValueError(
                "--episodes is not supported on multi-label data yet (the spread over episodes is computed from "
                "single-label hits). Run once per --subset_seed instead."
            )
        grid, episodes = None, ()
        cached = uses_token_cache(data_args, probe_args.protocol)
        if paper:
            args = resolve_recipe(training_args, "paper", data.num_training_samples(cached))
            if data.multi_label is not None and args.metric_for_best_model == "accuracy":
                args.metric_for_best_model = MULTI_LABEL_METRICS[0]  # the best epoch by mean average precision
        else:
            if data_args.episodes is not None:
                data, episodes = with_episodes(data, data_args)
                args = grid_arguments(training_args, len(episodes[0].train_rows))
            else:
                data = data.hold_out_selection(
                    data_args.selection_fraction, data_args.subset_seed, data_args.selection_rule
                )
                args = grid_arguments(training_args, data.num_training_samples(cached))
            rates = scaled_grid(probe_args.learning_rates or DEFAULT_BASE_LEARNING_RATES, effective_batch_size(args))
            members = grid_members(probe_args.probe, list(dict.fromkeys(layers)), rates)
            members += edge_reserves(members) if rungs and rungs.extend_edge else []
            members = seeded_members(members, probe_args.seeds)
            seed = episodes[0].seed if episodes else args.seed
            grid = build_grid(backbone, members, seed, kinds, (model_args.model_revision, data))
        return cls(
            protocol=probe_args.protocol,
            backbone=backbone,
            processor=processor,
            revision=model_args.model_revision,
            data=data,
            kinds=kinds,
            layers=layers,
            args=args,
            grid=grid,
            rungs=rungs,
            tokens=_token_source(data_args, probe_args.protocol, data),
            probe_args=probe_args,
            episodes=tuple(episodes),
        )

    def episode_grid(self, episode: Episode) -> ProbingGridModel:
        """The grid of a low-shot episode: the job's members, initialised from the episode's seed."""
        if episode.index == 0:
            return self.grid
        return build_grid(self.backbone, self.members, episode.seed, self.kinds, (self.revision, self.data))

    @property
    def bootstrap(self) -> BootstrapOptions:
        """The bootstrap interval over evaluation images (or videos) reported beside every evaluation figure."""
        unit = "videos" if self.data.is_video else "images"
        return BootstrapOptions(self.probe_args.bootstrap_resamples, self.probe_args.bootstrap_seed, unit)

    @property
    def members(self) -> tuple[GridMember, ...]:
        """The grid's members (kind x layer x learning rate); none under the paper's protocol."""
        return tuple(self.grid.members) if self.grid is not None else ()

    def run(self) -> dict:
        """Train (and k-NN-evaluate) as resolved: the default protocol returns the chosen probe's metrics (per kind
        when several kinds train); the paper's its final metrics (per layer when layer-wise)."""
        if self.protocol == "paper":
            results = run_paper_protocol(self)
        else:
            metrics = run_episodes(self) if self.episodes else run_default_protocol(self).metrics
            results = next(iter(metrics.values())) if len(metrics) == 1 else dict(metrics)
        if not self.probe_args.knn_eval:
            return results
        knn = run_knn(self)
        # one probe's metrics go under "probe"; per-layer or per-kind metrics keep their keys
        return {"probe": results, "knn": knn} if "eval_accuracy" in results else {**results, "knn": knn}

    def identity(self) -> dict:
        """What this run trains on and how: recorded in every checkpoint; a run resumes only a checkpoint of the same
        identity (`training.resume`)."""
        data = self.data
        config = self.backbone.config
        return json.loads(
            json.dumps(
                {
                    "protocol": self.protocol,
                    "backbone": backbone_identity(
                        self.backbone, getattr(self.backbone, "name_or_path", None), self.revision
                    ),
                    "backbone_type": config.model_type,
                    "data": {
                        "splits": {
                            name: {"fingerprint": split._fingerprint, "rows": len(split)}
                            for name, split in data.splits.items()
                        },
                        "columns": [data.image_column, data.label_column],
                        "labels": data.class_names,
                        "selection_split": {
                            k: v for k, v in data.info.get("selection_split", {}).items() if k != "rule"
                        },
                    },
                    "probes": {
                        "members": [member.name for member in self.members],
                        "kinds": self.kinds,
                        "layers": self.layers,
                        "rungs": self.rungs.record(self.args.num_train_epochs) if self.rungs else None,
                    },
                    "recipe": recipe_identity(self.args),
                    "tokens": {
                        **dataclasses.asdict(self.tokens),
                        "compute_dtype": resolve_compute_dtype(self.tokens.compute_dtype, self.args.device),
                        "preprocessing": data.eval_processor.to_dict(),
                    },
                },
                default=str,
            )
        )

    def run_info(self) -> dict:
        """The data's entries of the run summary."""
        info = {**self.data.info, "protocol": self.protocol, "preprocessing": describe_preprocessing(self.data)}
        if SELECTION in self.data.splits:
            info.update(selection_samples=len(self.data.splits[SELECTION]), train_samples=len(self.data.splits[TRAIN]))
        return info


def build_grid(backbone, members, seed: int, kinds: dict, source: tuple) -> ProbingGridModel:
    """The default protocol's grid of ``members`` on ``backbone`` (``source``: the backbone's revision and the
    prepared data, for the labels)."""
    revision, data = source
    return ProbingGridModel.from_backbone(
        backbone,
        members,
        seed=seed,
        kind_kwargs=kinds,
        revision=revision,
        num_labels=data.num_labels,
        **data.label_maps,
    )


def grid_rungs(probe_args: ProbeArguments) -> Rungs | None:
    """The default protocol's rungs: the arguments given, `training.rungs`' defaults for the others; ``None`` when
    they neither stop nor add members."""
    given = {
        "fractions": None if probe_args.prune_rungs is None else tuple(probe_args.prune_rungs),
        "prune": probe_args.prune,
        "keep": probe_args.prune_keep,
        "margin": probe_args.prune_margin,
        "extend_edge": probe_args.extend_grid_edge,
    }
    rungs = Rungs(**{name: value for name, value in given.items() if value is not None})
    return rungs if rungs.active else None


def describe_preprocessing(data: PreparedData) -> str:
    """The evaluation preprocessing in words (the cards and summaries show it)."""
    processor = data.eval_processor
    crop = processor.crop_size
    size = processor.size.get("shortest_edge") or f"{processor.size['height']}x{processor.size['width']}"
    described = (
        f"resize the shorter side to {size} px (bicubic), centre-crop {crop['height']}x{crop['width']}, normalise "
        f"with mean {list(processor.image_mean)} and std {list(processor.image_std)}"
    )
    return f"{data.clips.describe()}; every frame: {described}" if data.is_video else described


def clip_sampling(config, data_args: DataArguments) -> ClipSampling | None:
    """How the run takes clips from the videos (``--frames_per_clip``, default a video backbone's own;
    ``--frame_stride``; ``--clips_per_video``). An image backbone reads images (``None``), or, given
    ``--frames_per_clip``, clips frame by frame; without it, it refuses the other clip flags."""
    video = backbone_family(vision_config(config)).video
    if video is None and data_args.frames_per_clip is None:
        given = sorted(_given(data_args) & set(_VIDEO_ONLY))
        if given:
            raise ValueError(
                f"--{given[0]} is for video data; this {config.model_type!r} backbone reads images, or videos frame "
                "by frame when --frames_per_clip is given."
            )
        return None
    frames = data_args.frames_per_clip or video.native_frames(vision_config(config))
    return ClipSampling(frames, data_args.frame_stride, data_args.clips_per_video)


def _num_layers(backbone) -> int:
    return len(backbone_states(backbone.config)) - 1


def uses_token_cache(data_args: DataArguments, protocol: str) -> bool:
    """``--use_token_cache``, by default on under the default protocol (nothing trains in the backbone)."""
    return data_args.use_token_cache if data_args.use_token_cache is not None else protocol == "default"


def _token_source(data_args: DataArguments, protocol: str, data: PreparedData) -> TokenSource:
    """The cache by default under the default protocol (nothing trains in the backbone), the live backbone under the
    paper's; live training crops from the paper's 0.08, or (default protocol) from a bound suited to the images, or
    for clips from V-JEPA 2's 0.3."""
    if uses_token_cache(data_args, protocol):
        return TokenSource(
            True,
            data_args.token_cache_dir,
            data_args.backbone_dtype,
            token_dtype=data_args.token_dtype,
            cache_per_node=data_args.cache_per_node,
        )
    lower = data_args.crop_scale_min
    if lower is None and data.is_video:
        lower = VIDEO_CROP_SCALE_MIN
    elif lower is None:
        lower = (
            PAPER_CROP_SCALE_MIN
            if protocol == "paper"
            else suited_crop_scale_min(data.splits[TRAIN], data.image_column, data.image_processor)
        )
    return TokenSource(False, data_args.token_cache_dir, data_args.backbone_dtype, (lower, 1.0))


def load_backbone_and_processor(model_args: ModelArguments):
    """The frozen backbone ``model_args`` names (a Hub id or a local folder) and its image processor (a video
    backbone's video processor)."""
    if model_args.model_name_or_path is None:
        raise ValueError(
            "No backbone: pass --model_name_or_path (a Hub id or a local folder). `hf-probe train` with no arguments "
            "at all runs the offline demo instead."
        )
    hub = model_args.hub_kwargs
    backbone = load_backbone(model_args.model_name_or_path, revision=model_args.model_revision, **hub)
    video = backbone_family(vision_config(backbone.config)).video is not None
    processor = (AutoVideoProcessor if video else AutoImageProcessor).from_pretrained(
        model_args.image_processor_name or model_args.model_name_or_path, revision=model_args.model_revision, **hub
    )
    return backbone, processor


def probe_config_kwargs(probe_args: ProbeArguments) -> dict[str, dict]:
    """Per probe kind of ``--probe``, the probe-config fields from the arguments that its config class has. A field
    that no kind has is an error (a typo, or a setting for a kind that is not trained)."""
    if not probe_args.probe:
        raise ValueError("No probe kind: pass --probe (e.g. ep linear).")
    given = json.loads(probe_args.probe_config_json) if probe_args.probe_config_json else {}
    for name, value in (
        ("num_queries", probe_args.num_queries),
        ("d_out", probe_args.d_out),
        ("features", probe_args.linear_features),
        ("token_selection", probe_args.token_selection),
    ):
        if value is not None:
            given[name] = value
    config_fields = {kind: {f.name for f in dataclasses.fields(probe_config_class(kind))} for kind in probe_args.probe}
    per_kind = {
        kind: {name: value for name, value in given.items() if name in fields} for kind, fields in config_fields.items()
    }
    unknown = sorted(set(given) - {name for fields in per_kind.values() for name in fields})
    if unknown:
        every = sorted(
            set().union(*config_fields.values()) - {"backbone_config", "backbone_name_or_path", "backbone_revision"}
        )
        raise ValueError(f"The {probe_args.probe} probes have no settings {unknown}; their config fields are {every}.")
    return per_kind


def check_arguments(
    data_args: DataArguments, probe_args: ProbeArguments, training_args: ProbingTrainingArguments | None = None
) -> None:
    """Arguments the chosen protocol cannot honour, or does not read, fail here, before anything is loaded."""
    if probe_args.protocol not in PROTOCOLS:
        raise ValueError(f"Unknown --protocol {probe_args.protocol!r}; choose one of {PROTOCOLS}.")
    for kind in probe_args.probe if not isinstance(probe_args.probe, str) else [probe_args.probe]:
        probe_kind(kind)  # an unknown kind names the registered ones
    BootstrapOptions(probe_args.bootstrap_resamples, probe_args.bootstrap_seed)  # a bad count names the flag
    if data_args.episodes is not None:
        _check_episodes(data_args, probe_args)
    if probe_args.seeds is not None:
        seeded_members([], probe_args.seeds)  # a repeated or empty list of seeds names the flag
    if data_args.streaming:
        _check_streaming(data_args, probe_args, training_args)
    given = {
        "probe": _given(probe_args),
        "data": _given(data_args),
        "training": _given(training_args) if training_args is not None else set(),
    }
    unread = _DEFAULT_ONLY if probe_args.protocol == "paper" else _PAPER_ONLY
    reader = "the default protocol" if probe_args.protocol == "paper" else "--protocol paper"
    for group, names in unread.items():
        for name in sorted(given[group] & set(names)):
            raise ValueError(
                f"--{name} is read only by {reader}, not by --protocol {probe_args.protocol}. "
                + _PROTOCOL_HINTS.get(name, "Drop it, or choose the protocol that reads it.")
            )
    if not probe_args.knn_eval and given["probe"] & set(_KNN_ONLY):
        raise ValueError(
            f"{sorted(given['probe'] & set(_KNN_ONLY))} are read only with --knn_eval: add it, or drop them."
        )
    if (
        data_args.use_token_cache is not False
        and probe_args.protocol == "default"
        and "crop_scale_min" in given["data"]
    ):
        raise ValueError("--crop_scale_min is read only when training live: add --use_token_cache false, or drop it.")
    if data_args.cache_per_node and not uses_token_cache(data_args, probe_args.protocol):
        raise ValueError("--cache_per_node places the token cache, but this run trains live: drop it.")
    if probe_args.protocol == "paper":
        _check_paper(data_args, probe_args, training_args)
    elif training_args is not None and training_args.optimizer == "trainer":
        raise ValueError(
            "--optimizer trainer gives every parameter one learning rate, but the default protocol trains a grid of "
            "--learning_rates, one per member: choose adamw, lars or sgd, or --protocol paper."
        )


_PROTOCOL_HINTS = {
    "learning_rate": "The default protocol trains a grid of --learning_rates (base rates scaled by sqrt(batch/256)).",
    "base_learning_rate": "The default protocol trains a grid of --learning_rates (base rates scaled by sqrt(batch/256)).",
    "learning_rates": "--protocol paper trains one rate: --base_learning_rate, scaled by batch / 256.",
    "seeds": "--protocol paper trains one probe: run it once per --seed.",
    "episodes": "--protocol paper trains one probe: run it once per --subset_seed.",
    "selection_fraction": "--protocol paper chooses its epoch on the evaluation split (and says so).",
    "selection_rule": "--protocol paper chooses its epoch on the evaluation split (and says so).",
    "layerwise": "The default protocol already trains every layer of --feature_layers as its own grid member.",
    "lora_rank": "LoRA trains the backbone, which the default protocol's grid of probes shares.",
}


def _check_episodes(data_args: DataArguments, probe_args: ProbeArguments) -> None:
    if data_args.shots_per_class is None:
        raise ValueError("--episodes draws k images per class each time: give k with --shots_per_class.")
    if data_args.episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {data_args.episodes}.")
    if probe_args.seeds is not None:
        raise ValueError("Choose --episodes (draws of the training images) or --seeds (head seeds), not both.")
    if probe_args.knn_eval:
        raise ValueError("--knn_eval does not run per episode yet: drop it, or drop --episodes.")
    if data_args.selection_rule is not None:
        raise ValueError("Each episode draws its own stratified selection split: drop --selection_rule.")


def _check_paper(data_args: DataArguments, probe_args: ProbeArguments, training_args) -> None:
    if training_args is not None and _given(training_args) & {"learning_rate"} and training_args.optimizer != "trainer":
        raise ValueError(
            "--learning_rate is read only with --optimizer trainer; the paper's recipe scales --base_learning_rate by "
            "batch / 256."
        )
    if data_args.use_token_cache:
        raise ValueError(
            "--protocol paper trains through the live backbone with RandomResizedCrop and flips on every epoch; "
            "the token cache stores one deterministic view per image, so it would drop that augmentation. "
            "Choose: drop --use_token_cache (the paper's protocol, exactly), or drop --protocol paper (the "
            "default protocol: cached tokens, a learning-rate grid chosen on held-out train data)."
        )
    if len(probe_args.probe) != 1:
        raise ValueError(f"--protocol paper trains one probe kind per run; got --probe {probe_args.probe}.")


def _check_streaming(data_args: DataArguments, probe_args: ProbeArguments, training_args) -> None:
    """What ``--streaming`` cannot do fails before anything is loaded, with the flag to drop."""
    for name in _WHOLE_SPLIT_ONLY:
        if name in _given(data_args):
            raise ValueError(
                f"--{name} draws from (or scans) the whole split before training; a stream is read as it goes: drop "
                "it, or drop --streaming."
            )
    if data_args.cache_per_node:
        raise ValueError(
            "--cache_per_node has each node extract the whole data set; a stream is split between all processes: "
            "keep the cache root on a file system every node shares, or drop --streaming."
        )
    if data_args.selection_rule == "stratified":
        raise ValueError(
            "--selection_rule stratified draws from every label of train in a random order, which a stream never "
            "holds: use --selection_rule hash (the default with --streaming), or drop --streaming."
        )
    live = data_args.use_token_cache is False or (data_args.use_token_cache is None and probe_args.protocol == "paper")
    if live and probe_args.seeds is not None:
        raise ValueError(
            "--seeds reads each seed's own order of the training rows, which a live stream cannot give: train from "
            "the token cache (drop --use_token_cache false), or drop --streaming."
        )
    if training_args is not None and training_args.dataloader_num_workers:
        raise ValueError(
            "A stream decodes its images on threads of its own (DataLoader workers would each read all of it): pass "
            "--dataloader_num_workers 0 with --streaming."
        )


def _given(arguments) -> set[str]:
    """The fields of an arguments dataclass set to something else than their default."""
    defaults = {f.name: _default(f) for f in dataclasses.fields(arguments)}
    return {name for name, default in defaults.items() if getattr(arguments, name) != default}


def _default(field_):
    if field_.default is not dataclasses.MISSING:
        return field_.default
    if field_.default_factory is not dataclasses.MISSING:
        return field_.default_factory()
    return None


def run_probing(
    model_args: ModelArguments,
    data_args: DataArguments,
    probe_args: ProbeArguments,
    training_args: ProbingTrainingArguments,
    backbone_and_processor: tuple | None = None,
    data: PreparedData | None = None,
) -> dict:
    """The whole job: :meth:`ProbingJob.from_arguments` then :meth:`ProbingJob.run`. ``backbone_and_processor`` and
    ``data`` are what the job runs on when already loaded; by default the backbone ``model_args`` names and the data
    ``data_args`` names."""
    job = ProbingJob.from_arguments(model_args, data_args, probe_args, training_args, backbone_and_processor, data)
    return job.run()
