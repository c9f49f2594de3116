"""The `genesis` command: one subcommand per stage, quick help, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from genesis.cli import COMMANDS, build_parser, main

GENESIS = str(Path(sys.executable).parent / "genesis")


def test_every_stage_has_a_subcommand_with_help() -> None:
    result = subprocess.run([GENESIS, "--help"], capture_output=True, text=True, check=True)
    for name in COMMANDS:
        assert name in result.stdout
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from genesis.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["synth", "liver", "--output", "x", "--settings", '{"cases": "many"}'],
            "cases must be an integer",
        ),
        (["synth", "liver", "--output", "x", "--settings", "{not json"], "not valid JSON"),
        (
            ["cubes", "--inputs", "missing-folder", "--output", "c.npy", "--split", "train"],
            "missing-folder",
        ),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    result = subprocess.run([GENESIS, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_keeps_examples_on_their_lines_and_shows_no_none_defaults(capsys) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in text, command
        for line in text.splitlines():
            # an example command never runs into the prose of the line before it
            assert not ("genesis " in line and ". Example" in line), (command, line)
