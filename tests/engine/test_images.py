"""The engine on real images: pulled from a loopback registry (pushed there by skopeo from
refimage.py's layout), unpacked by layer storage, held by containers, committed, removed, pruned.

Every image verb the engine depends on is exercised through the CLI against the store+storage
ImageSource: pull policies, pull progress, foreign platforms, rmi of images in use, container
layers (created, kept, removed), ``image prune`` / ``system prune`` garbage collection,
``system df``, ``info`` and the top-level ``inspect``.
"""

from __future__ import annotations

import json
import os
import platform
import tarfile
from pathlib import Path

import pytest

from tests.engine.conftest import Pallet, derive_layout
from tests.support import peers


def _image_id(p: Pallet, name: str) -> str:
    return p.ok("image", "inspect", "-f", "{{.Id}}", name).strip()


def _container_image(p: Pallet, *args: str) -> str:
    """``create`` with ``args``; the ID of the image the container was made from."""
    cid = p.ok("create", *args).strip()
    try:
        return p.ok("container", "inspect", "-f", "{{.Image}}", cid).strip()
    finally:
        p.ok("rm", cid)


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


# -- pull ---------------------------------------------------------------------------------------------


def test_run_pulls_a_missing_image_with_progress(empty_pallet: Pallet) -> None:
    p = empty_pallet
    ref = f"{p.registry}/small:latest"
    r = p("run", "--rm", ref, "cat", "/etc/motd")
    assert r.rc == 0, r
    assert r.out == "hello from the small fixture\n"
    # podman prints the pull on stderr before the container's output
    assert f"Trying to pull {ref}" in r.err
    assert "Copying blob" in r.err and "Writing manifest to image destination" in r.err
    assert p.ok("images", "--format", "{{.Repository}}:{{.Tag}}") == f"{ref}\n"
    # the short name finds it now (podman's lookup), and -q silences a pull
    r = p("run", "--rm", "-q", "--pull", "always", "small", "true")
    assert (r.rc, r.err) == (0, ""), r
    r = p("create", "--pull", "always", "small", "true")
    assert r.rc == 0 and "Copying" in r.err, "create shows the pull too"
    p.ok("rm", r.out.strip())
    assert p.leaks() == []


def test_pulled_image_runs_with_exactly_its_content(empty_pallet: Pallet, tmp_path: Path,
                                                    small_expect: list) -> None:
    """pull → unpack (whiteouts, opaque dirs, hardlinks, odd names) → container rootfs: what a
    created container sees is refimage.py's expected listing, entry for entry."""
    p = empty_pallet
    out = p.ok("pull", f"{p.registry}/small:latest")
    assert out.strip() == _image_id(p, "small").removeprefix("sha256:")
    cid = p.ok("create", "--pull", "never", "small").strip()
    p.ok("export", "-o", str(tmp_path / "fs.tar"), cid)
    with tarfile.open(tmp_path / "fs.tar") as tf:
        members = {m.name.removeprefix("./").rstrip("/"): m for m in tf.getmembers()}
    got = {}
    for name, m in members.items():
        if not name or name == ".":
            continue
        size = m.size
        if m.islnk():  # a hardlink: the file it shares its inode with
            size = members[m.linkname.removeprefix("./")].size
        kind = "dir" if m.isdir() else "symlink" if m.issym() else "fifo" if m.isfifo() else "file"
        got[name] = (kind, m.mode & 0o7777, size if kind == "file" else 0, m.linkname if m.issym() else "")
    want = {path: (kind, mode, size, target) for path, kind, mode, size, target in small_expect}
    assert got == want
    p.ok("rm", cid)
    assert p.leaks([cid]) == []


def test_pull_policies_against_the_registry(empty_pallet: Pallet, small_layout: Path,
                                            tmp_path: Path) -> None:
    p = empty_pallet
    repo = f"{p.registry}/{_unique('policy')}"
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{repo}:latest")
    v2 = derive_layout(small_layout, tmp_path / "v2",
                       lambda c: c["config"].setdefault("Labels", {}).update({"version": "2"}))

    r = p("run", "--rm", "--pull", "never", repo, "true")
    assert r.rc == 125 and "image not known" in r.err and repo in r.err, r
    v1 = _container_image(p, "--pull", "missing", repo)
    assert v1 == _image_id(p, repo)
    # the tag moves on the registry; missing and never keep what is local
    peers.skopeo_copy(f"oci:{tmp_path / 'v2'}:latest", f"docker://{repo}:latest")
    assert _container_image(p, "--pull", "missing", repo) == v1
    assert _container_image(p, "--pull", "never", repo) == v1
    # newer and always ask the registry
    assert _container_image(p, "-q", "--pull", "newer", repo) == v2
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{repo}:latest")
    assert _container_image(p, "-q", "--pull", "always", repo) == v1
    assert _image_id(p, repo) == v1
    # a registry that is down: newer falls back to the local image, always fails (one line)
    dead = f"127.0.0.1:{peers.free_port()}/gone:latest"
    p.ok("tag", repo, dead)
    assert _container_image(p, "--pull", "newer", dead) == v1
    assert _container_image(p, "--pull", "missing", dead) == v1
    r = p("run", "--rm", "-q", "--pull", "always", dead, "true")
    assert r.rc == 125 and r.err.startswith(f"Error: pulling image {dead}: "), r
    assert "Connection refused" in r.err and r.err.count("\n") == 1, r
    r = p("run", "--rm", "--pull", "sometimes", repo, "true")
    assert r.rc == 125 and "invalid --pull 'sometimes'" in r.err, r
    r = p("run", "--rm", f"{p.registry}/{_unique('absent')}", "true")
    assert r.rc == 125 and "absent" in r.err, r
    assert p.ok("ps", "-aq") == ""
    assert p.leaks() == []


def test_image_for_another_architecture_is_refused(pallet: Pallet, small_layout: Path,
                                                   tmp_path: Path) -> None:
    arch = "s390x" if platform.machine() != "s390x" else "amd64"
    derive_layout(small_layout, tmp_path / "foreign", lambda c: c.update(architecture=arch))
    ref = f"{pallet.registry}/{_unique('foreign')}:latest"
    peers.skopeo_copy(f"oci:{tmp_path / 'foreign'}:latest", f"docker://{ref}")
    before = pallet.image_layers()
    r = pallet("run", "--rm", ref, "true")
    assert r.rc == 125, r
    assert f"image platform (linux/{arch}) does not match the host" in r.err
    assert r.err.splitlines()[-1].startswith("Error: ")
    # asked for explicitly, it is still not runnable here
    r = pallet("run", "--rm", "--platform", f"linux/{arch}", ref, "true")
    assert r.rc == 125 and "does not match the host" in r.err, r
    assert pallet.ok("ps", "-aq") == ""
    assert pallet.image_layers() == before, "same layers as small: nothing new unpacked"
    assert pallet.leaks() == []


# -- container layers -------------------------------------------------------------------------------------


def test_container_layers_come_and_go_with_containers(pallet: Pallet) -> None:
    layers = pallet.image_layers()
    assert len(layers) == 3, "small has three layers"
    assert pallet.ok("run", "--rm", "small", "sh", "-c", "echo x > /new; cat /new") == "x\n"
    assert pallet.container_layers() == [], "--rm leaves no container layer"
    script = "cat /kept 2>/dev/null; echo y > /kept"
    assert pallet.ok("run", "--name", "keep", "small", "sh", "-c", script) == ""
    cid = pallet.inspect("keep")["Id"]
    assert len(pallet.container_layers()) == 1, "a stopped container keeps its layer"
    assert pallet.ok("start", "-a", "keep") == "y\n", "its changes survive a restart"
    d = pallet.ok("run", "-d", "--name", "up", "small", "sleep", "300").strip()
    assert len(pallet.container_layers()) == 2
    graph = pallet.inspect("up")["GraphDriver"]
    assert graph["Name"] == "overlay"
    assert Path(graph["Data"]["MergedDir"]).is_dir() and graph["Data"]["UpperDir"]
    pallet.ok("rm", "keep")
    pallet.ok("rm", "-f", "up")
    assert pallet.container_layers() == []
    assert pallet.image_layers() == layers
    assert pallet.leaks([cid, d]) == []


def test_rmi_of_an_image_in_use(pallet: Pallet) -> None:
    image_id = _image_id(pallet, "small")
    a = pallet.ok("run", "-d", "--name", "user", "small", "sleep", "300").strip()
    b = pallet.ok("create", "--name", "made", "small", "true").strip()
    r = pallet("rmi", "small")
    assert r.rc == 2, r
    assert "in use" in r.err and a[:12] in r.err
    assert _image_id(pallet, "small") == image_id
    r = pallet("image", "prune", "-a", "-f")
    assert r.rc == 0 and image_id[7:] not in r.out, "prune -a keeps images containers use"
    assert len(pallet.image_layers()) == 3
    # -f removes the containers first, as podman does, then the image and its layers
    out = pallet.ok("rmi", "-f", "small")
    assert f"Deleted: {image_id[7:]}" in out
    assert pallet.ok("ps", "-aq") == ""
    assert pallet.ok("images", "-q") == ""
    assert pallet.image_layers() == [], "unpacked layers no image uses are collected"
    assert pallet.leaks([a, b]) == []


def test_image_and_system_prune_collect_layers(pallet: Pallet) -> None:
    pallet.ok("run", "--name", "c", "small", "sh", "-c", "echo v > /f")
    pallet.ok("commit", "c", "derived:1")
    assert len(pallet.image_layers()) == 3, "commit stores a blob; layers unpack on first use"
    assert pallet.ok("run", "--rm", "derived:1", "cat", "/f") == "v\n"
    assert len(pallet.image_layers()) == 4
    pallet.ok("rm", "c")
    pallet.ok("rmi", "small")  # small goes; derived still needs all four layers
    assert len(pallet.image_layers()) == 4
    r = pallet("system", "prune", "-a", "-f")
    assert r.rc == 0 and "Total reclaimed space" in r.out, r
    assert pallet.ok("images", "-q") == ""
    assert pallet.image_layers() == []
    assert pallet.leaks() == []


def test_system_df_info_version_inspect(pallet: Pallet) -> None:
    cid = pallet.ok("run", "-d", "--name", "small", "small", "sleep", "300").strip()
    image_id = _image_id(pallet, "small")
    df = pallet.ok("system", "df")
    rows = {line.split()[0]: line.split()[1:3] for line in df.splitlines()[1:]}
    assert rows["Images"] == ["1", "1"] and rows["Containers"] == ["1", "1"] and rows["Layers"][0] == "3"
    js = [json.loads(line) for line in pallet.ok("system", "df", "--format", "json").splitlines()]
    assert {j["Type"]: j["TotalCount"] for j in js} == {"Images": 1, "Containers": 1, "Layers": 3}
    assert "Containers space usage" in pallet.ok("system", "df", "-v")
    info = json.loads(pallet.ok("info", "--format", "json"))
    assert info["Images"] == 1 and info["Containers"] == 1 and info["ContainersRunning"] == 1
    assert info["Driver"] == "overlay"
    assert info["DockerRootDir"] == str(pallet.root) and info["RunRoot"] == str(pallet.runroot)
    assert pallet.registry in info["RegistryConfig"]["Search"]
    text = pallet.ok("info")
    assert " Images: 1" in text and " Storage Driver: overlay" in text and pallet.registry in text
    assert pallet.ok("info", "-f", "{{.Images}} {{.Driver}}") == "1 overlay\n"
    assert pallet.ok("version", "-f", "{{.Server.Version}}").strip()
    # the top-level inspect: a container named like an image wins, as docker's
    assert pallet.ok("inspect", "-f", "{{.Id}}", "small") == f"{cid}\n"
    assert pallet.ok("inspect", "--type", "image", "-f", "{{.Id}}", "small") == f"{image_id}\n"
    both = json.loads(pallet.ok("inspect", cid[:12], image_id))
    assert [o["Id"] for o in both] == [cid, image_id]
    r = pallet("inspect", "nothing-by-this-name")
    assert r.rc == 125 and "nothing-by-this-name" in r.err
    pallet.ok("rm", "-f", "small")


@pytest.mark.parametrize("template, want", [
    ('{{if eq .State "running"}}up{{else}}down{{end}} {{.Names | upper}}', "up WEB\n"),
    ('{{.Label "tier"}} {{printf "%.5s" .Image}}', "front small\n"),
    ("table {{.Names}}\\t{{.State}}", "NAMES     STATE\nweb       running\n"),
])
def test_ps_format_is_a_go_template(pallet: Pallet, template: str, want: str) -> None:
    pallet.ok("run", "-d", "--name", "web", "-l", "tier=front", "small", "sleep", "300")
    assert pallet.ok("ps", "--format", template) == want
