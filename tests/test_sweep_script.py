"""The Figure-2-style sweep command: many probes on one cached token stream, one table, every probe reloadable."""

import importlib.util
import json
from pathlib import Path

from hf_efficient_probing import AutoModelForEfficientProbing

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_probe_sweep.py"


def test_sweep_trains_every_probe_once_and_writes_the_table(tmp_path):
    spec = importlib.util.spec_from_file_location("run_probe_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "sweep"
    module.main(["--num_queries", "1", "4", "--linear_features", "cls", "gap", "--epochs", "1", "--use_token_cache",
                 "--token_cache_dir", str(tmp_path / "cache"), "--knn_features", "gap", "--output_dir", str(output)])  # fmt: skip
    table = (output / "results.md").read_text()
    names = ["ep-m1-do1-layer-1-lr0.001", "ep-m4-do1-layer-1-lr0.001", "linear-cls-layer-1-lr0.001",
             "linear-gap-layer-1-lr0.001"]  # fmt: skip
    for name in names:
        assert name in table
        model = AutoModelForEfficientProbing.from_pretrained(output / name)
        assert model.config.num_labels == 8
    assert "k-NN gap" in table
    results = json.loads((output / "results.json").read_text())
    assert len(results) == len(names)
