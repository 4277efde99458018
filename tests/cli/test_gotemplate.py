"""The --format template engine against the examples of docker's "Format command and log output" docs."""

from __future__ import annotations

import pytest

from pallet.cli.gotemplate import NIL_MAP, NIL_SLICE, GoMap, Template, TemplateError, render, tabwrite


def run(template: str, data: object) -> str:
    return Template(template).execute(data)


CONTAINER = {
    "Name": "/Focused_Hopper",
    "Args": ["-c", "sleep 10", "--x"],
    "Image": "ubuntu:latest",
    "State": {"Status": "running", "Running": True, "Pid": 4242},
    "Config": {
        "Env": ["A=1", "B=2"],
        "Labels": GoMap({"com.example.version": "1.0", "b": "x"}),
        "Entrypoint": NIL_SLICE,
        "Volumes": NIL_MAP,
        "Cmd": ["sleep", "10"],
    },
    "NetworkSettings": {
        "Networks": GoMap({"bridge": {"IPAddress": "172.17.0.2"}, "net2": {"IPAddress": "10.0.0.2"}}),
        "Ports": GoMap({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}),
    },
    "Mounts": [{"Type": "volume", "Destination": "/data", "RW": True}],
    "SizeRw": 1500000.0,
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # docker docs: join, json, lower, split, title, upper, println
        ('{{join .Args " , "}}', "-c , sleep 10 , --x"),
        ("{{json .Mounts}}", '[{"Type":"volume","Destination":"/data","RW":true}]'),
        ("{{lower .Name}}", "/focused_hopper"),
        ('{{split .Image ":"}}', "[ubuntu latest]"),
        ("{{title .Name}}", "/Focused_Hopper"),
        ('{{title "hello wide world"}}', "Hello Wide World"),
        ("{{upper .Name}}", "/FOCUSED_HOPPER"),
        ("{{println .Name}}", "/Focused_Hopper\n"),
        # docker inspect docs
        ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "172.17.0.2 10.0.0.2 "),
        ("{{.State.Status}}", "running"),
        ('{{index .Config.Labels "com.example.version"}}', "1.0"),
        (
            "{{range $p, $conf := .NetworkSettings.Ports}}{{$p}} -> {{(index $conf 0).HostPort}}{{end}}",
            "80/tcp -> 8080",
        ),
        ("{{json .Config.Labels}}", '{"b":"x","com.example.version":"1.0"}'),
        ("{{.Config.Labels}}", "map[b:x com.example.version:1.0]"),
        # nil slices/maps print as Go's zero values, missing map keys as <no value>
        ("{{.Config.Entrypoint}}", "[]"),
        ("{{.Config.Volumes}}", "map[]"),
        ("{{json .Config.Entrypoint}}", "null"),
        ("{{.Config.Labels.missing}}", "<no value>"),
        # control flow
        ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
        ("{{if not .State.Running}}down{{else if .State.Pid}}pid {{.State.Pid}}{{end}}", "pid 4242"),
        ("{{with .State}}{{.Status}}{{end}}", "running"),
        ("{{range .Config.Entrypoint}}x{{else}}no entrypoint{{end}}", "no entrypoint"),
        ("{{range $i, $a := .Args}}{{if $i}},{{end}}{{$a}}{{end}}", "-c,sleep 10,--x"),
        ("{{$n := len .Args}}{{$n}} args", "3 args"),
        ("{{len .Config.Env}}", "2"),
        ("{{.Args | json}}", '["-c","sleep 10","--x"]'),
        ('{{.Image | printf "%s!"}}', "ubuntu:latest!"),
        ('{{printf "%-8s|%4d|%q" "ab" 7 "q"}}', 'ab      |   7|"q"'),
        ("{{.SizeRw}}", "1.5e+06"),
        ('{{eq .State.Status "running" "paused"}}', "true"),
        ("{{if and .State.Running (gt .State.Pid 100)}}big{{end}}", "big"),
        ("{{pad .Image 1 2}}|{{truncate .Image 6}}", " ubuntu:latest  |ubuntu"),
        ('{{- /* a comment */ -}}\n  {{.State.Status}}  {{- "!" }}', "running!"),
        (
            "{{.}}",
            "{/Focused_Hopper [-c sleep 10 --x] ubuntu:latest {running true 4242} "
            "{[A=1 B=2] map[b:x com.example.version:1.0] [] map[] [sleep 10]} "
            "{map[bridge:{172.17.0.2} net2:{10.0.0.2}] map[80/tcp:[{0.0.0.0 8080}]]} "
            "[{volume /data true}] 1.5e+06}",
        ),
    ],
)
def test_docker_doc_examples(template: str, expected: str) -> None:
    assert run(template, CONTAINER) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.Nope}}", "can't evaluate field Nope"),
        ("{{.State.Nope}}", "<.State.Nope>"),
        ("{{.Name.Sub}}", "can't evaluate field Sub in type string"),
        ("{{if .Name}}", "missing {{end}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{.Name", "unclosed action"),
        ("{{nosuchfunc .Name}}", 'function "nosuchfunc" not defined'),
        ("{{.Name 1}}", "can't give argument to non-function"),
        ("{{len .State.Pid}}", "len of 4242"),
        ("{{$x}}", "undefined variable"),
    ],
)
def test_errors_are_one_clear_line(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as err:
        run(template, CONTAINER)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 125


def test_table_prefix_renders_docker_tabwriter() -> None:
    rows = [
        {"ID": "4f3a1b2c3d4e", "Repository": "docker.io/library/busybox", "Tag": "latest"},
        {"ID": "0c0ffee00000", "Repository": "<none>", "Tag": "<none>"},
    ]
    out = render("table {{.ID}}\\t{{.Repository}}\\t{{.Tag}}", rows, {"ID": "IMAGE ID"})
    assert out == (
        "IMAGE ID       REPOSITORY                  TAG\n"
        "4f3a1b2c3d4e   docker.io/library/busybox   latest\n"
        "0c0ffee00000   <none>                      <none>\n"
    )
    # headers for fields without a known title: podman's CamelCase → UPPER CASE
    assert render("table {{.CreatedAt}}", [{"CreatedAt": "x"}]).splitlines()[0] == "CREATED AT"
    # without "table": one line per row, \\n and \\t escapes honoured
    assert render("{{.ID}}:\\t{{.Tag}}", rows) == "4f3a1b2c3d4e:\tlatest\n0c0ffee00000:\t<none>\n"


def test_tabwriter_minimum_width_and_blocks() -> None:
    # docker: min cell width 10 including padding 3; the last cell is never padded
    assert tabwrite("a\tb\nccc\td\n") == "a         b\nccc       d\n"
    assert tabwrite("x" * 12 + "\ty\n") == "x" * 12 + "   y\n"
    # a line with fewer cells ends the column block (Go's tabwriter semantics)
    assert tabwrite("a\tb\nplain\nlong-cell-here\tc\n") == "a         b\nplain\nlong-cell-here   c\n"
