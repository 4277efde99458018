"""CLI output of the image verbs: table headers and columns, -q, --digests, --no-trunc, json, templates."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from pallet import images
from pallet.cli.main import main
from pallet.context import Context


@pytest.fixture
def root(tmp_path: Path, small_layout: Path) -> Path:
    ctx = Context(root=tmp_path / "root", runroot=tmp_path / "run")
    images.load_layout(small_layout, "latest", name="small", ctx=ctx)
    return tmp_path / "root"


@pytest.fixture
def cli(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def run(*args: str, rc: int = 0) -> str:
        code = main(["--root", str(root), "--runroot", str(tmp_path / "run"), *args])
        out, err = capsys.readouterr()
        assert code == rc, f"pallet {' '.join(args)} exited {code}: {err}"
        run.err = err  # type: ignore[attr-defined]
        return out

    return run


def cols(line: str) -> list[str]:
    return re.split(r" {3,}", line.strip())


def test_images_table(cli, small_layout: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli("images").splitlines()
    assert cols(out[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert out[0].startswith("REPOSITORY        ")  # padded as docker's tabwriter does
    repo, tag, ident, created, size = cols(out[1])
    assert (repo, tag, size) == ("localhost/small", "latest", "2.36MB")
    assert re.fullmatch(r"[0-9a-f]{12}", ident) and created.endswith("years ago")
    out = cli("images", "--digests", "--no-trunc").splitlines()
    assert cols(out[0]) == ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
    row = cols(out[1])
    assert row[2].startswith("sha256:") and row[3].startswith("sha256:") and len(row[3]) == 71
    assert cli("images", "-n").splitlines()[0].startswith("localhost/small")
    assert cli("image", "list", "--format", "table {{.Repository}}\\t{{.Size}}") == (
        "REPOSITORY        SIZE\nlocalhost/small   2.36MB\n"
    )


def test_images_quiet_json_and_templates(cli) -> None:  # type: ignore[no-untyped-def]
    cli("tag", "small", "quay.io/team/small:2")
    ident = cli("images", "-q").strip()
    assert re.fullmatch(r"[0-9a-f]{12}", ident), "one ID even with two tags"
    assert (
        cli("images", "-q", "--no-trunc").strip() == f"sha256:{cli('images', '-q', '--no-trunc')[7:].strip()}"
    )
    summary = json.loads(cli("images", "--format", "json"))
    assert len(summary) == 1 and summary[0]["Id"].startswith(ident)
    assert summary[0]["RepoTags"] == ["localhost/small:latest", "quay.io/team/small:2"]
    assert summary[0]["Labels"] == {"org.example.fixture": "latest"} and summary[0]["Size"] == 2355200
    lines = [json.loads(x) for x in cli("images", "--format", "{{json .}}").splitlines()]
    assert {x["Repository"] for x in lines} == {"localhost/small", "quay.io/team/small"}
    for key in (
        "Containers",
        "CreatedAt",
        "CreatedSince",
        "Digest",
        "ID",
        "Repository",
        "SharedSize",
        "Size",
        "Tag",
        "UniqueSize",
        "VirtualSize",
    ):
        assert key in lines[0]
    out = cli(
        "images", "--format", '{{.Repository}}:{{.Tag}} {{.ID}} {{index .Labels "org.example.fixture"}}'
    )
    assert out.splitlines() == [
        f"localhost/small:latest {ident} latest",
        f"quay.io/team/small:2 {ident} latest",
    ]
    assert cli("images", "quay.io/*/*", "--format", "{{.Tag}}") == "2\n"
    assert (
        cli("images", "--filter", "reference=small:latest", "--format", "{{.Repository}}")
        == "localhost/small\n"
    )


def test_dangling_rows_and_rmi_output(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    cli("tag", "small", "extra:1")
    out = cli("rmi", "extra:1")
    assert out == "Untagged: localhost/extra:1\n"
    cli("image", "untag", "small")
    out = cli("images").splitlines()
    assert cols(out[1])[:2] == ["<none>", "<none>"]
    assert cli("images", "--filter", "dangling=true", "-q") == cli("images", "-q")
    ident = cli("images", "-q", "--no-trunc").strip()
    assert cli("image", "rm", ident[7:15]) == f"Deleted: {ident[7:]}\n"
    assert cli("images") == "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"


def test_inspect_outputs(cli) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(cli("inspect", "small"))
    assert isinstance(data, list) and data[0]["RepoTags"] == ["localhost/small:latest"]
    assert list(data[0])[:6] == ["Id", "Digest", "RepoTags", "RepoDigests", "Parent", "Comment"]
    assert data == json.loads(cli("image", "inspect", "small"))
    assert (
        cli("inspect", "--type", "image", "-f", "{{.Config.Cmd}} {{.Config.Entrypoint}} {{.Os}}", "small")
        == "[/bin/sh] [] linux\n"
    )
    assert cli("inspect", "-f", "{{json .Config.Labels}}", "small") == '{"org.example.fixture":"latest"}\n'
    assert (
        cli("inspect", "-f", "{{range .RepoTags}}{{.}}{{end}}", "small", "small")
        == "localhost/small:latest\nlocalhost/small:latest\n"
    )
    out = cli("inspect", "-f", "{{.Id}}", "small", "nosuch", rc=125)
    # containers, images and volumes are all looked up: docker's "no such object"
    assert out.startswith("sha256:") and cli.err.strip() == "Error: no such object: nosuch"  # type: ignore[attr-defined]
    assert json.loads(cli("inspect", "nosuch", rc=125)) == []
    cli("inspect", "--type", "volume", "small", rc=125)
    assert "no such volume" in cli.err.lower()  # type: ignore[attr-defined]
    cli("inspect", "--type", "secret", "small", rc=125)
    assert "unknown --type 'secret'" in cli.err  # type: ignore[attr-defined]


def test_history_outputs(cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("history", "small").splitlines()
    assert cols(out[0]) == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    first = cols(out[1])
    assert (
        re.fullmatch(r"[0-9a-f]{12}", first[0])
        and first[2] == "refimage: empty layer"
        and first[3] == "10.2kB"
    )
    assert (
        cols(out[2])[0] == "<missing>" and cols(out[2])[2] == "refimage: whiteouts, opaque dir, hardlink, m…"
    )
    assert "refimage: whiteouts, opaque dir, hardlink, modes" in cli("history", "--no-trunc", "small")
    raw = cli("history", "-H=false", "small").splitlines()
    assert cols(raw[3])[1:] == ["2023-11-14T22:13:20Z", "refimage: busybox base", "2027520"]
    assert cli("history", "-q", "small").splitlines()[1:] == ["<missing>", "<missing>"]
    assert (
        cli("image", "history", "--format", "{{.Size}}|{{.CreatedBy}}", "small").splitlines()[-1]
        == "2.03MB|refimage: busybox base"
    )


def test_tree_exists_prune(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    text = cli("image", "tree")
    assert text.count("\n") == 3 and "Tags: localhost/small:latest" in text.splitlines()[2]
    assert cli("image", "tree", "--dot").startswith("digraph pallet {")
    assert cli("image", "exists", "small") == ""
    cli("image", "exists", "nothing", rc=1)
    cli("image", "untag", "small")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert cli("image", "prune") == ""
    assert "Are you sure you want to continue? [y/N]" in cli.err  # type: ignore[attr-defined]
    assert cli("images", "-q") != ""
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    removed = cli("image", "prune")
    assert re.fullmatch(r"[0-9a-f]{64}\n", removed)
    assert cli("images", "-q", "-a") == ""


def test_unregistered_and_group_usage(cli) -> None:  # type: ignore[no-untyped-def]
    cli("image", rc=125)
    assert "missing subcommand" in cli.err  # type: ignore[attr-defined]
    cli("pull", "busybox", rc=125)  # pull/push are wired by the registry client, not here
    cli("rmi", rc=125)
    assert "at least one IMAGE" in cli.err  # type: ignore[attr-defined]


def test_untagged_image_with_repo_digest_shows_its_repository(cli, root: Path) -> None:  # type: ignore[no-untyped-def]
    from pallet.store import Store

    with Store(root / "images") as s:
        img = s.lookup("small")
        s.add_repo_digest(img.id, f"docker.io/library/small@{img.manifest_digest}")
        s.untag("localhost/small:latest")
    out = cli("images", "--digests").splitlines()
    repo, tag, digest = cols(out[1])[:3]
    assert (repo, tag, digest) == ("docker.io/library/small", "<none>", img.manifest_digest)
    info = json.loads(cli("inspect", "small@" + img.manifest_digest))[0]
    assert info["RepoTags"] == [] and info["RepoDigests"] == [
        f"docker.io/library/small@{img.manifest_digest}"
    ]
    assert cli("rmi", f"docker.io/library/small@{img.manifest_digest}").splitlines() == [
        f"Untagged: docker.io/library/small@{img.manifest_digest}",
        f"Deleted: {img.id.encoded}",
    ]
