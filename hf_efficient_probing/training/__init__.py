"""Training and evaluating probes: the paper's recipe and the default protocol on `datasets` benchmarks, through the
`transformers` Trainer.

The rooms, in the order a run passes through them: ``arguments`` (the command line's dataclasses), ``job`` (one run
resolved once: backbone, data, recipe, layers, grid, protocol), ``data`` and ``prepared`` (loading and checking a
data set; a job's ``PreparedData``), ``transforms`` (live augmentation, the evaluation preprocessing), ``recipes``
(the protocols' values for unset fields, LARS/AdamW, the schedule), ``protocols`` (the default one, the paper's,
k-NN), ``grid`` (many probes as one model), ``rungs`` (where a grid stops members out of contention and extends its
edge), ``engine`` (the training loops through the one ``trainer``, with ``resume`` and ``selection``),
``reporting`` (summaries, tables, plots, the printed log) and ``sweep`` (the ``hf-probe sweep`` job). The offline default job lives in ``hf_efficient_probing.demo``.
"""

from .arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments, SweepArguments
from .data import (
    BENCHMARKS,
    BenchmarkSpec,
    DataError,
    check_dataset,
    load_image_dataset,
    low_shot_indices,
    low_shot_subset,
)
from .engine import GridResult, GridSplits, ProbingResult, RunOptions, train_grid, train_probe
from .grid import GridMember, ProbingGridModel, grid_members
from .job import ProbingJob, run_probing
from .lora import add_lora
from .prepared import ImageClassificationDataset, PreparedData, prepare_data, probing_collator
from .recipes import LARS, build_optimizer, warmup_cosine_schedule
from .resume import RunMismatchError
from .selection import hold_out_for_selection
from .trainer import ProbingTrainer
from .transforms import evaluation_processor, training_transform

__all__ = [
    "BENCHMARKS",
    "LARS",
    "BenchmarkSpec",
    "DataArguments",
    "DataError",
    "GridMember",
    "GridResult",
    "GridSplits",
    "ImageClassificationDataset",
    "ModelArguments",
    "PreparedData",
    "ProbeArguments",
    "ProbingGridModel",
    "ProbingJob",
    "ProbingResult",
    "ProbingTrainer",
    "ProbingTrainingArguments",
    "RunMismatchError",
    "RunOptions",
    "SweepArguments",
    "add_lora",
    "build_optimizer",
    "check_dataset",
    "evaluation_processor",
    "grid_members",
    "hold_out_for_selection",
    "load_image_dataset",
    "low_shot_indices",
    "low_shot_subset",
    "prepare_data",
    "probing_collator",
    "run_probing",
    "train_grid",
    "train_probe",
    "training_transform",
    "warmup_cosine_schedule",
]
