"""Training and evaluating probes: the paper's recipe on `datasets` benchmarks with the `transformers` Trainer.

``train_probe`` trains a probe model on prepared data sets; ``run_probing`` does a whole job from the script's
arguments (data, backbone, probe, layer-wise runs, k-NN); ``run_embedded_default`` is the offline default job.
"""

from .arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments
from .data import (
    BENCHMARKS,
    BenchmarkSpec,
    DataError,
    ImageClassificationDataset,
    check_dataset,
    load_image_dataset,
    low_shot_indices,
    low_shot_subset,
    probing_collator,
)
from .embedded import embedded_backbone, embedded_dataset
from .images import build_transforms, to_rgb
from .knn import knn_classify
from .lora import add_lora
from .optim import LARS, build_optimizer, warmup_cosine_schedule
from .run import run_embedded_default, run_probing
from .trainer import ProbingResult, ProbingTrainer, train_probe

__all__ = [
    "BENCHMARKS",
    "LARS",
    "BenchmarkSpec",
    "DataArguments",
    "DataError",
    "ImageClassificationDataset",
    "ModelArguments",
    "ProbeArguments",
    "ProbingResult",
    "ProbingTrainer",
    "ProbingTrainingArguments",
    "add_lora",
    "build_optimizer",
    "build_transforms",
    "check_dataset",
    "embedded_backbone",
    "embedded_dataset",
    "knn_classify",
    "load_image_dataset",
    "low_shot_indices",
    "low_shot_subset",
    "probing_collator",
    "run_embedded_default",
    "run_probing",
    "to_rgb",
    "train_probe",
    "warmup_cosine_schedule",
]
