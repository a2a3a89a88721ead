"""``hf-probe``: one command for every action of the library, each a thin subcommand over its entry point.

    hf-probe train --model_name_or_path facebook/dinov2-small --dataset_name cifar10 --output_dir out/
    hf-probe find --backbone facebook/dinov2-small
    hf-probe attention-maps --model user/probe --image cat.jpg

Each subcommand hands the rest of the command line to the entry point's own ``main(argv)`` (their parsers define the
arguments, so ``hf-probe <command> --help`` shows each option with its default). The entry points are imported only
when their subcommand runs, so that ``hf-probe --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable

# subcommand -> (entry point "module:function", one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("hf_efficient_probing.cli:train", "train a probe on a frozen backbone and report its accuracy"),
    "sweep": (
        "hf_efficient_probing.cli:sweep",
        "train many probes on one backbone pass, one results table",
    ),
    "convert": ("hf_efficient_probing.official.conversion:main", "turn one official-code head into a probe directory"),
    "convert-vjepa2": (
        "hf_efficient_probing.transformers_heads:main",
        "turn a V-JEPA 2 video classifier's attentive probe into a probe directory",
    ),
    "import-official": (
        "hf_efficient_probing.official.release:main",
        "import the official release of EP heads as probe repositories",
    ),
    "push": (
        "hf_efficient_probing.cli:push",
        "publish a trained probe (or an imported release) on the Hub, with cards",
    ),
    "verify": (
        "hf_efficient_probing.official.verify:main",
        "check that a probe's backbone gives the features its head was trained on",
    ),
    "find": ("hf_efficient_probing.hub.find:main", "list the probes on the Hub for a backbone"),
    "attention-maps": (
        "hf_efficient_probing.analysis.commands:attention_maps",
        "draw a probe's attention maps over an image",
    ),
    "analyze": ("hf_efficient_probing.analysis.commands:analyze", "per-query attention entropy and accuracy drop"),
    "plan": ("hf_efficient_probing.cache.plan:main", "plan a token-cache extraction (disk, time) before running it"),
}


def train(argv: list[str] | None = None):
    """Train a probe (``ModelArguments``, ``DataArguments``, ``ProbeArguments`` and every ``TrainingArguments``
    option; a single ``.json`` argument is read as a file of arguments). Without arguments, runs the offline default
    job; ``--push_to_hub`` publishes the probe with this library's model card."""
    from transformers import HfArgumentParser

    from .demo import offline_inputs, run_embedded_default
    from .training import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments, run_probing
    from .training.job import check_arguments

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not argv or (argv[0] == "--embedded_default" and len(argv) <= 2):  # [real | synthetic]
        accuracies = run_embedded_default(kind=argv[1] if len(argv) == 2 else "real")
        for probe, metrics in accuracies.items():
            print(
                f"{probe}: top-1 {100 * metrics['eval_accuracy']:.2f}%  top-5 {100 * metrics['eval_top5_accuracy']:.2f}%"
                f"  ({metrics['probe_parameters']:,} trained parameters)"
            )
        return accuracies
    parser = HfArgumentParser((ModelArguments, DataArguments, ProbeArguments, ProbingTrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, probe_args, training_args = parser.parse_json_file(argv[0])
    else:
        model_args, data_args, probe_args, training_args = parser.parse_args_into_dataclasses(argv)
    check_arguments(data_args, probe_args, training_args)  # before the backbone and data are loaded
    backbone_and_processor, data = offline_inputs(model_args, data_args)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # published below, with our card
    results = run_probing(model_args, data_args, probe_args, training_args, backbone_and_processor, data)
    if training_args.process_index == 0:
        print(json.dumps(results, indent=2, default=str))
        if push_to_hub:  # --push_to_hub [--hub_model_id user/name] [--hub_private_repo] [--hub_token ...]
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
            commit = publish_run(
                training_args.output_dir,
                repo_id,
                example_image=data.splits["validation"][0][data.image_column],  # for the attention-map figure
                private=training_args.hub_private_repo,
                token=training_args.hub_token,
            )
            print(f"Pushed the probe to {commit.repo_url}")
    return results


def sweep(argv: list[str] | None = None) -> list[dict]:
    """Train many probes on one backbone pass (see `training.sweep`); without ``--model_name_or_path`` or
    ``--dataset_name``, on the synthetic demo backbone or data set."""
    from .demo import offline_inputs
    from .training.sweep import parse_sweep_arguments, run_probe_sweep

    model_args, data_args, sweep_args, training_args = parse_sweep_arguments(argv)
    (backbone, _), data = offline_inputs(model_args, data_args)
    return run_probe_sweep(data_args, sweep_args, training_args, backbone, data)


def push(argv: list[str] | None = None):
    """Publish a probe directory written by ``train`` (its ``run_summary.json`` fills the card's results), or every
    head of a folder ``import-official`` wrote (``--repo_prefix``: each to ``ORG/ep-<slug>``, as written)."""
    from .official.release import REPORT, push_release

    parser = argparse.ArgumentParser(
        description="Publish a trained probe directory, or the heads an import-official wrote, on the Hub.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("output_dir", help="the probe directory (as train writes it), or an import-official folder")
    parser.add_argument("--repo_id", default=None, help="Hub repository of a probe directory, user/name")
    parser.add_argument(
        "--repo_prefix", default=None, help="user or organisation for every head of an import-official folder"
    )
    parser.add_argument("--example_image", default=None, help="image to draw the attention maps on, for the card")
    parser.add_argument("--revision", default=None, help="branch to push to (default main)")
    parser.add_argument("--private", action="store_true", help="create the repositories as private")
    parser.add_argument("--token", default=None, help="Hub token (None: HF_TOKEN or the saved login)")
    args = parser.parse_args(argv)
    if os.path.isfile(os.path.join(args.output_dir, REPORT)):
        if not args.repo_prefix:
            parser.error(f"{args.output_dir} is an import-official folder: give --repo_prefix ORG.")
        try:
            commits = push_release(args.output_dir, args.repo_prefix, token=args.token, private=args.private or None)
        except ValueError as error:
            parser.error(str(error))
        print(f"Pushed {len(commits)} probes of {args.output_dir} under {args.repo_prefix}")
        return commits
    if not args.repo_id:
        parser.error("--repo_id is required: the Hub repository to publish the probe directory to.")
    commit = publish_run(
        args.output_dir,
        args.repo_id,
        example_image=args.example_image,
        private=args.private or None,
        revision=args.revision,
        token=args.token,
    )
    print(f"Pushed {args.output_dir} to {commit.repo_url}")
    return commit


def publish_run(output_dir: str, repo_id: str, **push_kwargs):
    """Publish the probe a training run saved in ``output_dir``, its card filled from the run's summary."""
    from . import AutoModelForEfficientProbing

    model = AutoModelForEfficientProbing.from_pretrained(output_dir)
    return model.push_to_hub(repo_id, run_dir=output_dir, **push_kwargs)


@contextlib.contextmanager
def _program_name(name: str):
    """Entry points name themselves after ``sys.argv[0]`` in usage and errors: make that ``hf-probe <command>``."""
    saved, sys.argv[0] = sys.argv[0], name
    try:
        yield
    finally:
        sys.argv[0] = saved


def entry_point(command: str) -> Callable:
    """The entry point of a subcommand; a clear exit when this version of the package does not have it."""
    target = COMMANDS[command][0]
    module_name, function = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        module = None
    if not hasattr(module, function):
        raise SystemExit(
            f"hf-probe {command}: this installation has no {target} (the feature it runs is not part of this version "
            "of hf-efficient-probing yet)."
        )
    return getattr(module, function)


def main(argv: list[str] | None = None) -> int:
    commands = "\n".join(f"  {name:<16} {summary}" for name, (_, summary) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="hf-probe",
        description="Attentive probing of frozen vision backbones: train, find, import, publish and inspect probes.",
        epilog=f"commands:\n{commands}\n\n`hf-probe <command> --help` shows the options of a command, with defaults.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    function = entry_point(args.command)
    with _program_name(f"hf-probe {args.command}"):
        function(args.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
