"""The ``hf-probe`` console script: every subcommand reaches its entry point, with that entry point's options and
defaults in ``--help`` (run through the installed script, as a user would)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
from cli_script import hf_probe_path

from hf_efficient_probing import cli

# subcommand -> what its --help must show: options of its own entry point, and a default
HELP = {
    "train": ("--model_name_or_path", "--protocol", "--learning_rates", "(default: 0.1)"),
    "sweep": ("--model_name_or_path", "--learning_rates", "--selection_fraction"),
    "convert": ("--backbone", "--ep-queries", "--pooling"),
    "convert-vjepa2": ("--output", "--frames_per_clip", "VJEPA2ForVideoClassification"),
    "import-official": ("--push_to_hub ORG", "--show_mapping", "manifest.json", "--clip_activation", "SLUG=HUB_ID"),
    "push": ("--repo_id", "--repo_prefix", "--example_image", "(default: None)"),
    "verify": ("--data_dir", "--num_images", "(default: 500)", "--expected_top1"),
    "find": ("--backbone", "facebook/dinov2-small"),
    "attention-maps": ("--image", "--video", "--frame_stride", "(default: 8)"),
    "analyze": ("--data_dir", "--batch_size", "(default: 64)"),
    "plan": ("--model_name_or_path", "--dataset_name"),
}
# entry points that other parts of the package provide: until they exist, the command must say so clearly
PENDING = {"sweep", "plan"}


def test_every_subcommand_has_a_check():
    assert set(HELP) == set(cli.COMMANDS)


def pending(command: str) -> bool:
    module_name, function = cli.COMMANDS[command][0].split(":")
    module = importlib.import_module(module_name) if importlib.util.find_spec(module_name) else None
    return command in PENDING and not hasattr(module, function)


def test_the_script_lists_its_commands_and_every_subcommand_answers_help():
    """Through the installed script, every run at once (each start imports torch and transformers for seconds)."""
    env = {**os.environ, "COLUMNS": "200"}
    lines = [("--help",), ("unknown-command",), *((command, "--help") for command in HELP)]
    runs = {
        line: subprocess.Popen(
            [hf_probe_path(), *line], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for line in lines
    }
    results = {line: (*process.communicate(timeout=600), process.returncode) for line, process in runs.items()}

    text, _, code = results[("--help",)]
    assert code == 0
    for command, (_, summary) in cli.COMMANDS.items():
        assert f"  {command} " in text and summary in text
    _, error, code = results[("unknown-command",)]
    assert code != 0 and "invalid choice: 'unknown-command'" in error

    for command in HELP:
        stdout, stderr, code = results[(command, "--help")]
        if pending(command):
            target = cli.COMMANDS[command][0]
            assert code != 0 and f"no {target} " in stderr and "not part of this version" in stderr, stderr
            continue
        assert code == 0, f"hf-probe {command} --help failed:\n{stderr[-3000:]}"
        if command != "plan":  # plan's parser names itself (python -m hf_efficient_probing.cache.plan)
            assert stdout.startswith(f"usage: hf-probe {command} "), stdout[:200]
        for expected in HELP[command]:
            assert expected in stdout, f"`hf-probe {command} --help` lacks {expected!r}:\n{stdout}"


def test_subcommand_runs_its_entry_point_with_the_rest_of_the_line(monkeypatch):
    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "find", ("hf_efficient_probing.hub.find:main", "list"))
    monkeypatch.setattr("hf_efficient_probing.hub.find.main", lambda argv: seen.setdefault("argv", argv))
    assert cli.main(["find", "--backbone", "a/b", "--token", "x"]) == 0
    assert seen["argv"] == ["--backbone", "a/b", "--token", "x"]


def test_a_missing_feature_says_so(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "plan", ("hf_efficient_probing.not_a_module:main", "plan"))
    with pytest.raises(SystemExit, match="no hf_efficient_probing.not_a_module"):
        cli.main(["plan"])


def test_the_package_declares_the_console_script():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["hf-probe"] == "hf_efficient_probing.cli:main"
