#!/usr/bin/env python
"""Train a probe on a frozen vision backbone and report its top-1/top-5 accuracy.

    python examples/run_probing.py                      # offline default job: EP and linear probe on CPU
    python examples/run_probing.py --embedded_default synthetic   # the same on generated data, nothing to install
    python examples/run_probing.py --model_name_or_path facebook/vit-mae-base --dataset_name cifar-100 \
        --probe ep linear --output_dir out/             # the default protocol: a grid chosen on held-out train data
    python examples/run_probing.py ... --protocol paper # the paper's ImageNet recipe (LARS, 90 epochs, augmentation)
    accelerate launch --num_processes 8 examples/run_probing.py ...   # several GPUs or processes

Arguments: ModelArguments, DataArguments, ProbeArguments (hf_efficient_probing.training.arguments) and every
`TrainingArguments` option; a single .json argument is read as a file of arguments.
"""

import json
import logging
import os
import sys

from transformers import HfArgumentParser

from hf_efficient_probing.hub import push_training_run
from hf_efficient_probing.training import (
    DataArguments,
    ModelArguments,
    ProbeArguments,
    ProbingTrainingArguments,
    run_embedded_default,
    run_probing,
)
from hf_efficient_probing.training.run import load_data


def main(argv=None):
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
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # published below, with our card
    results = run_probing(model_args, data_args, probe_args, training_args)
    if training_args.process_index == 0:
        print(json.dumps(results, indent=2, default=str))
        if push_to_hub:  # --push_to_hub [--hub_model_id user/name] [--hub_private_repo] [--hub_token ...]
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
            dataset, image_column, *_ = load_data(data_args)  # one validation image for the attention-map figure
            commit = push_training_run(
                training_args.output_dir,
                repo_id,
                example_image=dataset["validation"][0][image_column],
                private=training_args.hub_private_repo,
                token=training_args.hub_token,
            )
            print(f"Pushed the probe to {commit.repo_url}")
    return results


if __name__ == "__main__":
    main()
