"""The ``hf-probe`` console script: every subcommand reaches its entry point, with that entry point's options and
defaults in ``--help`` (run through the installed script, as a user would)."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
from cli_script import hf_probe

from hf_efficient_probing import cli

# subcommand -> what its --help must show: options of its own entry point, and a default
HELP = {
    "train": ("--model_name_or_path", "--num_train_epochs", "(default: 90"),
    "sweep": ("--model_name_or_path",),
    "convert": ("--backbone", "--ep-queries", "--pooling"),
    "import-official": ("--push_to_hub ORG", "--show_mapping", "manifest.json"),
    "push": ("--repo_id", "--example_image", "(default: None)"),
    "find": ("--backbone", "facebook/dinov2-small"),
    "attention-maps": ("--image", "--columns", "(default: 8)"),
    "analyze": ("--data_dir", "--batch_size", "(default: 64)"),
    "plan": ("--help",),
}
# entry points that other parts of the package provide: until they exist, the command must say so clearly
PENDING = {"sweep", "plan"}


def test_every_subcommand_has_a_check():
    assert set(HELP) == set(cli.COMMANDS)


def test_help_lists_every_subcommand():
    text = hf_probe("--help")
    for command, (_, summary) in cli.COMMANDS.items():
        assert f"  {command} " in text and summary in text
    assert "unknown-command" not in text
    assert "invalid choice" in hf_probe("unknown-command", check=False)


@pytest.mark.parametrize("command", list(HELP))
def test_every_subcommand_answers_help(command, capsys, monkeypatch):
    """In process, through the function the console script runs (each script start imports torch and transformers
    for seconds; the script itself is run by the tests above and by the find and import-official tests)."""
    monkeypatch.setattr("sys.argv", ["hf-probe"])
    monkeypatch.setenv("COLUMNS", "200")
    target = cli.COMMANDS[command][0]
    module_name, function = target.split(":")
    if command in PENDING and not hasattr(
        importlib.import_module(module_name) if importlib.util.find_spec(module_name) else None, function
    ):
        with pytest.raises(SystemExit, match=f"no {target} .*not part of this version"):
            cli.main([command, "--help"])
        return
    with pytest.raises(SystemExit) as exit_code:
        cli.main([command, "--help"])
    assert exit_code.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hf-probe {command} "), text[:200]
    for expected in HELP[command]:
        assert expected in text, f"`hf-probe {command} --help` lacks {expected!r}:\n{text}"


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
