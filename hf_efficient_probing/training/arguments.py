"""Command-line arguments of ``hf-probe train`` and ``hf-probe sweep``, as dataclasses for one `HfArgumentParser`.

``ProbingTrainingArguments`` is `TrainingArguments` plus the probing recipe's own settings. The recipe fields left
unset (``None``) are filled by the protocol (`training.recipes`): the default one (AdamW, a learning-rate grid,
epochs and batch that follow the data size) or the paper's (90 epochs, LARS, base lr 0.1 scaled by batch / 256, 10
warm-up epochs then cosine). Every value given on the command line wins over both; a value the chosen protocol does
not read is an error (`training.job.check_arguments`). ``SweepArguments`` are the sweep's own (its grid of EP shapes
and linear features).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..cache.quantization import TOKEN_DTYPES
from .transforms import EVAL_RESIZE_RATIO


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Backbone: Hub id or local path. Unset: the synthetic demo backbone."},
    )
    model_revision: str | None = field(default=None, metadata={"help": "Backbone revision (branch, tag or commit)."})
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor, if not the backbone's."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Cache directory for Hub downloads (the backbone's and the data set's)."}
    )
    token: str | None = field(default=None, metadata={"help": "Hub token for private or gated backbones/data sets."})

    @property
    def hub_kwargs(self) -> dict:
        """``cache_dir`` and ``token`` as `from_pretrained` and `load_dataset` take them (the ones given)."""
        return {name: value for name, value in (("cache_dir", self.cache_dir), ("token", self.token)) if value}


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A benchmark name (imagenet-1k, cifar-100, ...), a Hub id, a save_to_disk directory, or an image "
            "folder with train/ and validation/ class sub-folders. Unset: the synthetic demo data set."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub data set configuration."})
    image_column_name: str | None = field(default=None, metadata={"help": "Image column (found when unset)."})
    label_column_name: str | None = field(default=None, metadata={"help": "Label column (found when unset)."})
    train_split: str | None = field(default=None, metadata={"help": "Training split (default: train)."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Evaluation split (default: validation, then val, then test)."}
    )
    val_fraction_of_train: float | None = field(
        default=None, metadata={"help": "Hold out this stratified fraction of train as the validation split."}
    )
    selection_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Default protocol: the stratified, seeded fraction of train held out to choose the learning "
            "rate, layer and epoch (the evaluation split is never read for that)."
        },
    )
    selection_rule: str | None = field(
        default=None,
        metadata={
            "help": "Default protocol: how the selection split is drawn. stratified (the default): a seeded random "
            "draw from every class; hash (the default with --streaming): from every class the images whose seeded "
            "hash of their stored bytes is lowest (the same images in any order or sharding)."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the data set as a stream (datasets' streaming=True), nothing downloaded first: each process "
            "reads and caches its own part (split_dataset_by_node); the selection split follows --selection_rule "
            "hash. Images only, one class per image."
        },
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N images only."})
    shots_per_class: int | None = field(
        default=None, metadata={"help": "Low-shot: train on this many images per class (stratified, seeded)."}
    )
    episodes: int | None = field(
        default=None,
        metadata={
            "help": "Default protocol, with --shots_per_class k: train on this many seeded draws of k images per "
            "class (seeds --subset_seed, +1, ...), each with its own grid and selection split, and report the mean "
            "and 95 %% interval over draws (one backbone pass over the union of their images)."
        },
    )
    train_fraction: float | None = field(
        default=None, metadata={"help": "Low-shot: train on this fraction of every class (stratified, seeded)."}
    )
    subset_seed: int = field(default=0, metadata={"help": "Seed of the low-shot subset and of held-out splits."})
    crop_scale_min: float | None = field(
        default=None,
        metadata={
            "help": "Lower scale bound of RandomResizedCrop (paper: 0.08; default protocol: from the image size)."
        },
    )
    eval_resize_ratio: float = field(
        default=EVAL_RESIZE_RATIO, metadata={"help": "Evaluation resize of the shorter side, relative to the crop."}
    )
    skip_unreadable: bool = field(
        default=False,
        metadata={
            "help": "Scan the data set and leave out images or videos that cannot be decoded (videos also when too "
            "short for one clip), counted in the summary."
        },
    )
    skip_unreadable_images: bool = field(
        default=False, metadata={"help": "The former name of --skip_unreadable (still read)."}
    )
    frames_per_clip: int | None = field(
        default=None,
        metadata={
            "help": "Video: frames per clip (default: a video backbone's own; V-JEPA 2 reads any multiple of its "
            "tubelet). Given with an image backbone, it reads the clips frame by frame."
        },
    )
    frame_stride: int = field(
        default=1, metadata={"help": "Video: a clip takes every this many frames of the video (1: consecutive)."}
    )
    clips_per_video: int = field(
        default=1,
        metadata={
            "help": "Video: clips spread evenly over each video that evaluation and selection read, their logits "
            "averaged (V-JEPA 2's eval); the token cache holds each, and training from it reads each as a sample."
        },
    )
    use_token_cache: bool | None = field(
        default=None,
        metadata={
            "help": "Run the frozen backbone once per image and train from its cached tokens (the eval preprocessing "
            "for both splits: no augmentation). Reused while backbone, layers, preprocessing and data are unchanged. "
            "Default: on for the default protocol (nothing trains in the backbone), off for --protocol paper."
            " A bare --use_token_cache means true; --use_token_cache false trains live.",
            # unset (None) means "as the protocol says", so the flag needs its bare form spelled out for argparse
            "nargs": "?",
            "const": True,
        },
    )
    token_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where token caches live, one sub-directory per fingerprint (default: $HF_PROBING_TOKEN_CACHE, "
            "else $HF_HOME/hf_efficient_probing/token-cache)."
        },
    )
    cache_per_node: bool = field(
        default=False,
        metadata={
            "help": "Several nodes: each node extracts the whole token cache into its own --token_cache_dir (a "
            "node-local disk) for its ranks. Without it every process of the run fills one cache, so the cache root "
            "must be a file system every node shares."
        },
    )
    token_dtype: str = field(
        default="float16",
        metadata={
            "help": "How the token cache stores tokens: float16, bfloat16, float32, or 8 bits a value with a scale "
            "per token: float8 (e4m3, scale = absmax / 448) or int8 (codes over each token's min-max range): half "
            "the disk of float16. Part of the cache's fingerprint.",
            "choices": list(TOKEN_DTYPES),
        },
    )
    backbone_dtype: str = field(
        default="auto",
        metadata={
            "help": "Precision of the frozen backbone when it fills the token cache: auto (bfloat16 autocast on CUDA "
            "and CPUs with bf16 support, else float32), bfloat16 or float32."
        },
    )


@dataclass
class ProbeArguments:
    protocol: str = field(
        default="default",
        metadata={
            "help": "default: a grid of learning rates x layers x probe kinds trained in one run, chosen on data held "
            "out from train, the evaluation split reported once. paper: the paper's ImageNet recipe (LARS, 90 "
            "epochs, augmentation through the live backbone, best epoch chosen on the evaluation split)."
        },
    )
    probe: list[str] = field(
        default_factory=lambda: ["ep"],
        metadata={
            "help": "Probe kinds (registered pooling names: ep, linear, aim, ...); several train in the same grid."
        },
    )
    learning_rates: list[float] | None = field(
        default=None,
        metadata={
            "help": "Default protocol: base learning rates of the grid, scaled by sqrt(batch / 256) (default: 8 "
            "values from 3e-5 to 1e-1)."
        },
    )
    seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "Default protocol: train every grid member under each of these seeds, in the same run (its own "
            "head initialisation and order of the training rows; the backbone pass or token cache shared). The "
            "setting (kind, layer, learning rate) is chosen by its mean held-out accuracy over the seeds; results "
            "report the mean, the standard deviation and each seed. Unset: one seed, --seed."
        },
    )
    bootstrap_resamples: int = field(
        default=1000,
        metadata={"help": "Resamples of the evaluation images for the 95 %% bootstrap interval of every figure."},
    )
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the bootstrap resamples."})
    prune: bool | None = field(
        default=None,
        metadata={
            "help": "Default protocol: at each of --prune_rungs, stop the grid members out of contention on the "
            "held-out split (they keep their best epoch; the choice is made over every member as before). "
            "Default: on. A bare --prune means true.",
            "nargs": "?",
            "const": True,
        },
    )
    prune_rungs: list[float] | None = field(
        default=None,
        metadata={
            "help": "Default protocol: the rungs, as fractions of the run's epochs (each after a whole epoch), where "
            "members out of contention stop and a kind's best member at the grid's edge gets the next rate "
            "(default: 1/9 and 1/3)."
        },
    )
    prune_keep: int | None = field(
        default=None,
        metadata={
            "help": "Default protocol: members every probe kind and layer keeps at a rung, at least (default 2)."
        },
    )
    prune_margin: float | None = field(
        default=None,
        metadata={
            "help": "Default protocol: a member within this much held-out accuracy of its kind's best (0.05 = 5 "
            "points, the default), plus two standard errors of the held-out split, is kept at a rung."
        },
    )
    extend_grid_edge: bool | None = field(
        default=None,
        metadata={
            "help": "Default protocol: when a rung finds a kind's best member at the largest (smallest) learning "
            "rate of the grid, train the next rate beyond it for the epochs left. Default: off (the run reports "
            "a chosen rate at the edge). A bare --extend_grid_edge means true.",
            "nargs": "?",
            "const": True,
        },
    )
    num_queries: int | None = field(default=None, metadata={"help": "EP: number of queries M (default 32)."})
    d_out: int | None = field(default=None, metadata={"help": "EP: output reduction D_o (default 1)."})
    linear_features: str | None = field(default=None, metadata={"help": "Linear probe: cls, gap or cls+gap."})
    token_selection: str | None = field(default=None, metadata={"help": "patch (default) or all ([CLS] + patches)."})
    feature_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Hidden states read (0 = embeddings, -1 = last block). Default protocol: each one is a grid "
            "member (default: the last block and the one at 3/4 depth). Paper protocol: concatenated (default -1)."
        },
    )
    layerwise: bool = field(
        default=False,
        metadata={"help": "Paper protocol: probe each of --feature_layers in its own run (output_dir/layer_<i>)."},
    )
    probe_config_json: str | None = field(
        default=None, metadata={"help": "Other probe config fields as JSON, e.g. '{\"num_heads\": 16}'."}
    )
    lora_rank: int = field(
        default=0, metadata={"help": "Train LoRA adapters of this rank on the backbone (needs peft)."}
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Backbone modules that get LoRA adapters."}
    )
    knn_eval: bool = field(default=False, metadata={"help": "Also run the k-NN evaluation of the frozen backbone."})
    knn_features: str = field(default="cls", metadata={"help": "k-NN features: cls or gap."})
    knn_k: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100, 200], metadata={"help": "k values swept."})
    knn_temperatures: list[float] = field(default_factory=lambda: [0.07], metadata={"help": "Vote temperatures swept."})


@dataclass
class ProbingTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the recipe's own settings; ``None`` means "as the protocol says" (`training.recipe`)."""

    output_dir: str | None = field(default="probing-output", metadata={"help": "Where the probe and results go."})
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Training epochs (paper: 90; default protocol: follows the data size)."}
    )
    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Batch size per device (paper: 256; default protocol: 64), capped by the training split."},
    )
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch size per device."})
    eval_strategy: str = field(default="epoch", metadata={"help": "Evaluate every epoch (best-epoch selection)."})
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint every epoch (for resume)."})
    logging_strategy: str = field(default="epoch", metadata={"help": "Log every epoch."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best and the last)."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the probe of the best epoch."})
    metric_for_best_model: str | None = field(default="accuracy", metadata={"help": "Metric of the best epoch."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep every column for the transforms."})
    optimizer: str | None = field(
        default=None,
        metadata={
            "help": "lars (the paper's), sgd, adamw (the default protocol's), or trainer (TrainingArguments' optim "
            "and scheduler)."
        },
    )
    base_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Paper protocol: lr = base_learning_rate * effective batch / 256 (default 0.1)."},
    )
    warmup_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Linear warm-up epochs before the cosine decay (paper: 10; default protocol: 5 per cent of the run); "
            "never more than a fifth of the run."
        },
    )
    min_lr_ratio: float = field(default=0.0, metadata={"help": "Final learning rate, relative to the peak."})
    momentum: float = field(default=0.9, metadata={"help": "Momentum of LARS and SGD."})
    lars_trust_coefficient: float = field(default=0.001, metadata={"help": "LARS trust coefficient."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement (off when unset)."}
    )
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest improvement that counts."})
    keep_checkpoints: bool = field(
        default=False,
        metadata={"help": "Keep the checkpoint-* folders (pickled optimizer/RNG state) after a finished run."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in --output_dir: delete this library's checkpoints there instead of resuming from "
            "them (a checkpoint of another run is otherwise an error)."
        },
    )


@dataclass
class SweepArguments:
    """``hf-probe sweep``: a Figure-2-style grid on one backbone pass: EP at every valid (num_queries, d_out) and the
    linear probes, at every learning rate and layer, each chosen at its best epoch on the held-out split."""

    num_queries: list[int] = field(default_factory=lambda: [1, 4, 16, 32], metadata={"help": "EP queries M."})
    d_out: list[int] = field(default_factory=lambda: [1], metadata={"help": "EP output reductions D_o."})
    linear_features: list[str] = field(
        default_factory=lambda: ["cls", "gap"], metadata={"help": "Linear probes: cls, gap and/or cls+gap."}
    )
    learning_rates: list[float] = field(default_factory=lambda: [1e-3], metadata={"help": "Peak learning rates."})
    feature_layers: list[int] = field(default_factory=lambda: [-1], metadata={"help": "Hidden states read."})
    knn_features: list[str] = field(
        default_factory=list,
        metadata={
            "help": "With the token cache: k-NN of cls and/or gap features, (k, T) chosen on the held-out split."
        },
    )
