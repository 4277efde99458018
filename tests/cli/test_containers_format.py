"""The CLI side of container verbs that needs no container: --format rendering, detach keys, parsing."""

from __future__ import annotations

import pytest

from pallet.cli import containers as cli
from pallet.cli.gotemplate import GoMap
from pallet.cli.main import main
from pallet.errors import UsageError

OBJ = {
    "Name": "/web",
    "State": {"Running": True, "ExitCode": 0, "Pid": 42},
    # maps are marked as Go maps (go_typed does it for inspect JSON); plain dicts are structs
    "Config": {"Labels": GoMap({"a": "1", "b.c": "2"}), "Cmd": ["sh", "-c", "x"], "Env": None},
    "Ratio": 0.5,
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.Name}}", "/web"),
        ("{{.State.Running}} {{.State.ExitCode}}", "true 0"),
        ("{{json .Config.Cmd}}", '["sh","-c","x"]'),
        ("{{.Config.Cmd}}", "[sh -c x]"),
        ("{{.Config.Labels}}", "map[a:1 b.c:2]"),
        ("{{.Config.Labels.nope}}", "<no value>"),
        ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a=1;b.c=2;"),
        ('{{if .State.Running}}up{{else}}down{{end}}', "up"),
        ('{{index .Config.Labels "b.c"}}', "2"),
        ("{{.Config.Env}}", "<nil>"),
        ("{{json .State}}", '{"Running":true,"ExitCode":0,"Pid":42}'),
        ("pid={{.State.Pid}}\\tname={{.Name}}", "pid=42\tname=/web"),
        ('{{join .Config.Cmd ","}}', "sh,-c,x"),
        ("{{.Name | upper}}", "/WEB"),
        ("{{.Ratio}}", "0.5"),
        ("json", None),
    ],
)
def test_render_format(template: str, expected: str | None) -> None:
    out = cli.render_format(template, OBJ)
    if expected is None:
        import json

        assert json.loads(out) == OBJ
    else:
        assert out == expected


@pytest.mark.parametrize("template", ["{{.Nope}}", "{{.State.Nope}}", "{{frobnicate .Name}}", "{{.Name"])
def test_render_format_errors(template: str) -> None:
    with pytest.raises(UsageError, match="template"):
        cli.render_format(template, OBJ)


def test_table_format(capsys: pytest.CaptureFixture[str]) -> None:
    cli.print_formatted(
        "table {{.ID}}\t{{.Names}}",
        [{"ID": "abc", "Names": "x"}, {"ID": "defgh", "Names": "y"}],
        {"ID": "CONTAINER ID", "Names": "NAMES"},
    )
    assert capsys.readouterr().out == "CONTAINER ID   NAMES\nabc            x\ndefgh          y\n"


def test_detach_keys() -> None:
    assert cli.parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert cli.parse_detach_keys("ctrl-a,x") == b"\x01x"
    assert cli.parse_detach_keys("") == b""
    assert cli.parse_detach_keys(None) is None
    with pytest.raises(UsageError):
        cli.parse_detach_keys("ctrl-1")


def test_cp_argument_split() -> None:
    assert cli._split_cp("web:/etc/x") == ("web", "/etc/x")
    assert cli._split_cp("/host/path:with:colons") == (None, "/host/path:with:colons")
    assert cli._split_cp("./rel") == (None, "./rel")
    assert cli._split_cp("-") == (None, "-")


def test_bad_flags_exit_125(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--no-such-flag", "img"]) == 125
    assert main(["ps", "--bogus"]) == 125
    assert main(["cp", "a:/x", "b:/y"]) == 125
    err = capsys.readouterr().err
    assert "exactly one of" in err


def test_run_help_lists_docker_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--detach",
        "--interactive",
        "--tty",
        "--rm",
        "--env-file",
        "--mount",
        "--tmpfs",
        "--memory-swap",
        "--cpus",
        "--pids-limit",
        "--ulimit",
        "--read-only",
        "--cap-add",
        "--privileged",
        "--security-opt",
        "--device",
        "--init",
        "--restart",
        "--stop-signal",
        "--health-cmd",
        "--runtime",
        "--pull",
        "--log-driver",
        "--log-opt",
        "--add-host",
        "--dns",
        "--sysctl",
        "--shm-size",
        "--network",
        "--hostname",
    ):
        assert flag in out, flag


def test_global_runtime_flag_is_not_shadowed_by_runs_own() -> None:
    from pallet.cli.parser import build_parser

    args = build_parser(["run"]).parse_args(["--runtime", "crun", "run", "img"])
    assert args.runtime == "crun" and args.container_runtime is None
    args = build_parser(["run"]).parse_args(["run", "--runtime", "runc", "img"])
    assert args.container_runtime == "runc"
