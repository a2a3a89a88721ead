#!/usr/bin/env python
"""A Figure-2-style sweep on one frozen backbone: many probes trained together, one table of probe, params, top-1
(same as ``hf-probe sweep``; the job is `hf_efficient_probing.training.sweep.run_probe_sweep`).

    python examples/run_probe_sweep.py                  # offline: the embedded synthetic backbone and data set
    python examples/run_probe_sweep.py --model_name_or_path facebook/vit-mae-base --dataset_name cifar-100 \
        --num_queries 1 4 16 32 64 --d_out 1 2 4 --learning_rates 1e-3 1e-2 --use_token_cache --num_train_epochs 90
"""

from hf_efficient_probing.cli import sweep as main

if __name__ == "__main__":
    main()
