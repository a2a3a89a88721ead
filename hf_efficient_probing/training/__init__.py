"""Training and evaluating probes: the paper's recipe on `datasets` benchmarks with the `transformers` Trainer.

``prepare_data`` loads and checks a job's data once (``PreparedData``: splits, columns, classes, transforms, token
caches). ``run_probing`` does a whole job from the script's arguments. Its default protocol trains a grid of probes
(``ProbingGridModel``: kinds x layers x learning rates) in one Trainer run with ``train_grid``, chosen on a split
held out from train (``PreparedData.hold_out_selection``); ``--protocol paper`` trains one probe with
``train_probe``, the paper's recipe. The offline default job lives in ``hf_efficient_probing.demo``.
"""

from .arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments
from .data import (
    BENCHMARKS,
    BenchmarkSpec,
    DataError,
    ImageClassificationDataset,
    PreparedData,
    check_dataset,
    hold_out_for_selection,
    load_image_dataset,
    low_shot_indices,
    low_shot_subset,
    prepare_data,
    probing_collator,
)
from .grid import GridMember, ProbingGridModel, grid_members
from .images import build_transforms
from .knn import knn_classify
from .lora import add_lora
from .optim import LARS, build_optimizer, warmup_cosine_schedule
from .run import run_probing
from .sweep import GridResult, train_grid
from .trainer import ProbingResult, ProbingTrainer, train_probe

__all__ = [
    "BENCHMARKS",
    "LARS",
    "BenchmarkSpec",
    "DataArguments",
    "DataError",
    "GridMember",
    "GridResult",
    "ImageClassificationDataset",
    "ModelArguments",
    "PreparedData",
    "ProbeArguments",
    "ProbingGridModel",
    "ProbingResult",
    "ProbingTrainer",
    "ProbingTrainingArguments",
    "add_lora",
    "build_optimizer",
    "build_transforms",
    "check_dataset",
    "grid_members",
    "hold_out_for_selection",
    "knn_classify",
    "load_image_dataset",
    "low_shot_indices",
    "low_shot_subset",
    "prepare_data",
    "probing_collator",
    "run_probing",
    "train_grid",
    "train_probe",
    "warmup_cosine_schedule",
]
