#!/usr/bin/env python
"""Train a probe on a frozen vision backbone and report its top-1/top-5 accuracy (same as ``hf-probe train``).

    python examples/run_probing.py                      # offline default job: EP and linear probe on CPU
    python examples/run_probing.py --embedded_default synthetic   # the same on generated data, nothing to install
    python examples/run_probing.py --model_name_or_path facebook/vit-mae-base --dataset_name cifar-100 \
        --probe ep linear --output_dir out/             # the default protocol: a grid chosen on held-out train data
    python examples/run_probing.py ... --protocol paper # the paper's ImageNet recipe (LARS, 90 epochs, augmentation)
    accelerate launch --num_processes 8 examples/run_probing.py ...   # several GPUs or processes

Arguments: ModelArguments, DataArguments, ProbeArguments (hf_efficient_probing.training.arguments) and every
`TrainingArguments` option; a single .json argument is read as a file of arguments.
"""

from hf_efficient_probing.cli import train as main

if __name__ == "__main__":
    main()
