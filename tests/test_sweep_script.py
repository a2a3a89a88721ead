"""The Figure-2-style sweep command: many probes in one grid on one cached token stream, one table, every probe
reloadable and reproducing its reported accuracy."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.cache import TokenCache
from hf_efficient_probing.cache.features import global_features
from hf_efficient_probing.evaluation.knn import knn_classify

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_probe_sweep.py"


def test_sweep_trains_every_probe_once_and_writes_the_table(tmp_path):
    spec = importlib.util.spec_from_file_location("run_probe_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output, cache = tmp_path / "sweep", tmp_path / "cache"
    module.main(["--num_queries", "1", "4", "--linear_features", "cls", "gap", "--num_train_epochs", "1",
                 "--use_token_cache", "--token_cache_dir", str(cache), "--knn_features", "gap",
                 "--output_dir", str(output)])  # fmt: skip
    table = (output / "results.md").read_text()
    names = ["ep_num_queries1_d_out1_layer4_lr1.00e-03", "ep_num_queries4_d_out1_layer4_lr1.00e-03",
             "linear_featurescls_layer4_lr1.00e-03", "linear_featuresgap_layer4_lr1.00e-03"]  # fmt: skip
    rows = {row["name"]: row for row in json.loads((output / "results.json").read_text())}
    assert sorted(rows) == sorted(names) and all(name in table for name in names)
    caches = {TokenCache(p).key["split"]: TokenCache(p) for p in cache.iterdir()}
    # k-NN's (k, T) is chosen on the held-out split (the rest of train as the bank), the evaluation split read once
    bank, selection, evaluation = (
        global_features(caches[split], "gap") for split in ("train", "selection", "validation")
    )
    chosen = max(knn_classify(*bank, *selection), key=lambda r: r["top1"])
    (evaluated,) = knn_classify(*bank, *evaluation, ks=(chosen["k"],), temperatures=(chosen["temperature"],))
    knn_row = [
        f"k-NN gap (k={chosen['k']}, T={chosen['temperature']})",
        "0",
        f"{100 * chosen['top1']:.2f}",
        "-",
        f"{100 * evaluated['top1']:.2f}",
    ]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
    assert knn_row in cells, table
    validation = caches["validation"].dataset()
    tokens = torch.stack([validation[i]["tokens"] for i in range(len(validation))])
    labels = validation.labels
    for name in names:
        model = AutoModelForEfficientProbing.from_pretrained(output / "members" / name)
        view = tokens if model.config.reads_cls_token else tokens[:, 1:]
        with torch.no_grad():
            accuracy = (model(tokens=view).logits.argmax(-1) == labels).float().mean().item()
        assert accuracy == pytest.approx(rows[name]["eval_accuracy"])  # the saved probe is the one reported
