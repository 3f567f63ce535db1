"""The ``abdus`` parser: help on every option, one way to give DATA, old spellings, errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from abdus.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _walk(parser: argparse.ArgumentParser, name: str = "abdus") -> Iterator[tuple[str, object]]:
    """(command, action) for every action of ``parser`` and of all its subcommands."""
    for action in parser._actions:
        yield name, action
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _walk(sub, f"{name} {command}")
            yield from ((f"{name} {a.dest}", a) for a in action._choices_actions)


def test_every_option_positional_and_command_has_help():
    missing = [
        f"{name}: {'/'.join(action.option_strings) or action.dest}"
        for name, action in _walk(build_parser())
        if not (action.help or "").strip()
    ]
    assert missing == []
    commands = dict(_commands(build_parser()))
    assert {"train", "evaluate", "reproduce", "predict", "export", "benchmark", "demo"} <= set(
        commands
    )


def test_the_walk_sees_subcommand_options():
    """The help check above would catch an option without help (it walks the subparsers)."""
    parser = build_parser()
    dict(_commands(parser))["train"].add_argument("--undocumented")
    assert any(a.dest == "undocumented" and a.help is None for _, a in _walk(parser))


# The DATA rule (docs/cli.md): a dataset that is the command's main input is the positional
# DATA; where the main input is a run or model, the dataset is ``--data DATA``.
@pytest.mark.parametrize(
    ("argv", "data"),
    [
        (["train", "cohort", "--out", "run"], "cohort"),
        (["reproduce", "cohort", "--out", "dir"], "cohort"),
        (["evaluate", "run", "--data", "cohort"], "cohort"),
        (["benchmark", "run", "--data", "cohort"], "cohort"),
        (["export", "run", "--out", "m.onnx", "--int8", "--data", "cohort"], "cohort"),
        (["export", "run", "--out", "m.onnx", "--int8", "--calibration", "cohort"], "cohort"),
    ],
)
def test_data_is_given_one_way(argv, data):
    assert build_parser().parse_args(argv).data == data


def test_usage_names_data_and_run_the_same_way_everywhere():
    usage = {name: sub.format_usage() for name, sub in _commands(build_parser())}
    assert usage["train"].rstrip().endswith(" DATA") and "--data" not in usage["train"]
    assert usage["reproduce"].rstrip().endswith(" DATA")
    for name in ("evaluate", "export"):
        assert usage[name].rstrip().endswith(" RUN") and "--data DATA" in usage[name]
    assert "--data DATA" in usage["benchmark"]


def test_old_spellings_work_but_stay_out_of_help():
    commands = dict(_commands(build_parser()))
    text = commands["export"].format_help()
    assert "--data DATA" in text and "--calibration " not in text
    assert "--calibration-images" in text


def test_predict_takes_a_device():
    parser = build_parser()
    assert parser.parse_args(["predict", "run", "x.dcm", "--out", "o"]).device is None
    args = parser.parse_args(["predict", "run", "x.dcm", "--out", "o", "--device", "cuda:1"])
    assert args.device == "cuda:1"


@pytest.mark.parametrize(
    "argv",
    [
        ["info", "/no/such/file.dcm"],
        ["evaluate", "/no/run", "--data", "/no/data"],
        ["export", "/no/run", "--out", "/tmp/never.onnx", "--int8"],
        ["predict", "/no/run", "/no/file.dcm", "--out", "/tmp/never", "--device", "tpu"],
    ],
)
def test_cli_user_errors_are_one_line_without_traceback(argv, capsys):
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("error:")
    assert len(err.strip().splitlines()) == 1


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, abdus.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "False"


def test_the_depth_choices_are_the_encoder_depths():
    from abdus.cli import RESNET_DEPTHS
    from abdus.models.encoder import RESNET_SPECS

    assert set(RESNET_DEPTHS) == set(RESNET_SPECS)
