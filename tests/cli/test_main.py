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


def test_help_is_as_wide_as_columns_says():
    """pallet.cli.parser.Formatter finds the width as shutil.get_terminal_size does ($COLUMNS, then
    stdout's terminal, else 80 columns; argparse's own default then takes 2 off), without
    importing shutil (with bz2 and lzma, ~1.6 ms of every `pallet run`)."""
    code = ("import sys\n"
            "from pallet.cli.parser import Formatter\n"
            "print(Formatter('pallet')._width, 'shutil' in sys.modules)\n")
    for columns, width in (("60", "58"), ("200", "198"), ("", "78"), ("junk", "78")):
        env = {"PATH": "/usr/bin:/bin", **({"COLUMNS": columns} if columns else {})}
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [width, "False"], (columns, res.stdout)
