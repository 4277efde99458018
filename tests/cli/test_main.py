import subprocess
import sys

from pallet.cli import render
from pallet.cli.main import main


def test_unknown_verb_is_usage_error(capsys):
    assert main(["frobnicate"]) == 125
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pallet version ")


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "pallet.cli.main", "--version"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


def test_human_size_matches_docker():
    assert render.human_size(0) == "0B"
    assert render.human_size(5_590_000) == "5.59MB"
    assert render.human_size(999_999) == "1000kB"
    assert render.human_size(1_234_567_890) == "1.23GB"


def test_parse_size():
    assert render.parse_size("512m") == 512 << 20
    assert render.parse_size("1g") == 1 << 30
    assert render.parse_size("100") == 100
