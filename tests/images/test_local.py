"""Local verbs through the API: tag, rmi (docker's untag-versus-delete), holders, prune, filters,
history and the layer tree, on refimage small and images derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pallet import images
from pallet.context import Context
from pallet.errors import UsageError
from pallet.images.layertree import render_dot, render_text
from pallet.store import ImageInUse, ImageNotFound, Store
from tests.images.conftest import derived_layout


@pytest.fixture
def family(ctx: Context, small: images.Image, small_layout: Path, tmp_path: Path) -> dict[str, images.Image]:
    """small, plus child (small's first 2 layers) and sibling (small's first layer)."""
    images.load_layout(derived_layout(small_layout, tmp_path / "child", 2, "child"), name="child", ctx=ctx)
    images.load_layout(derived_layout(small_layout, tmp_path / "sib", 1, "sibling"), name="sibling", ctx=ctx)
    return {n: images.lookup(n, ctx=ctx) for n in ("small", "child", "sibling")}


def test_tag_moves_names_and_short_names_resolve(ctx: Context, family: dict[str, images.Image]) -> None:
    small, child = family["small"], family["child"]
    img = images.tag("small", "busybox", "registry.example:5000/team/app:1", ctx=ctx)
    assert img.names == (
        "localhost/small:latest",
        "localhost/busybox:latest",
        "registry.example:5000/team/app:1",
    )
    assert images.lookup("team/app:1", ctx=ctx).id == small.id
    images.tag("child", "busybox", ctx=ctx)  # the tag moves; small keeps its other names
    assert images.lookup("busybox", ctx=ctx).id == child.id
    assert "localhost/busybox:latest" not in images.lookup("small", ctx=ctx).names
    images.tag(small.id.encoded[:10], "docker.io/library/busybox:1", ctx=ctx)
    assert images.lookup("busybox:1", ctx=ctx).id == small.id, "docker.io/library/busybox:1 as 'busybox:1'"
    with pytest.raises(Exception, match="cannot contain a digest"):
        images.tag("small", f"x@{small.manifest_digest}", ctx=ctx)


def test_rmi_untags_when_several_names_and_deletes_with_the_last(
    ctx: Context, family: dict[str, images.Image]
) -> None:
    small = family["small"]
    images.tag("small", "other:1", ctx=ctx)
    r = images.remove(["other:1"], ctx=ctx)
    assert [(e.action, e.value) for e in r.events] == [("untagged", "localhost/other:1")] and not r.errors
    assert images.exists("small", ctx=ctx)
    r = images.remove(["small"], ctx=ctx)
    assert [(e.action, e.value) for e in r.events] == [
        ("untagged", "localhost/small:latest"),
        ("deleted", small.id),
    ]
    assert not images.exists(small.id, ctx=ctx)
    # child and sibling still have their shared base layers
    with images.open_store(ctx) as s:
        for name in ("child", "sibling"):
            for layer in s.lookup(name).layers:
                assert s.has_blob(layer.digest)
        assert not s.has_blob(small.layers[2].digest), "small's own top layer went with it"


def test_rmi_by_id_across_repositories_needs_force(ctx: Context, family: dict[str, images.Image]) -> None:
    small = family["small"]
    images.tag("small", "quay.io/x/small:1", ctx=ctx)
    r = images.remove([small.id.encoded[:12]], ctx=ctx)
    assert not r.events and isinstance(r.errors[0], ImageInUse)
    assert "multiple repositories" in str(r.errors[0])
    r = images.remove([small.id.encoded[:12]], force=True, ctx=ctx)
    assert [e.action for e in r.events] == ["untagged", "untagged", "deleted"]


def test_rmi_refuses_images_in_use_unless_forced(ctx: Context, family: dict[str, images.Image]) -> None:
    small = family["small"]
    with images.open_store(ctx) as s:
        s.add_holder(small.id, "4f2a" * 16)
    r = images.remove(["small"], ctx=ctx)
    assert isinstance(r.errors[0], ImageInUse) and "4f2a4f2a4f2a" in str(r.errors[0])
    assert images.exists("small", ctx=ctx)
    seen: list[str] = []
    r = images.remove(["small"], force=True, ctx=ctx, on_in_use=lambda img: seen.append(img.id))
    assert seen == [small.id] and r.events[-1].action == "deleted"
    r = images.remove(["small", "nothere", "child"], ctx=ctx)
    assert isinstance(r.errors[0], ImageNotFound) and [e.action for e in r.events] == ["untagged", "deleted"]


def test_rmi_all_and_prune(ctx: Context, family: dict[str, images.Image]) -> None:
    images.untag("sibling", ctx=ctx)  # untagged, but small and child build on its layer: intermediate
    images.untag("small", ctx=ctx)  # untagged and nobody's parent: dangling
    with images.open_store(ctx) as s:
        s.add_holder(family["child"].id, "ctr")
    pruned = images.prune(ctx=ctx)
    assert [i.id for i in pruned] == [family["small"].id]
    pruned = images.prune(all=True, ctx=ctx)
    assert [i.id for i in pruned] == [family["sibling"].id], "child is in use"
    images.tag("child", "again", ctx=ctx)
    r = images.remove([], all=True, ctx=ctx)
    assert isinstance(r.errors[0], ImageInUse)
    r = images.remove([], all=True, force=True, ctx=ctx)
    assert images.list(ctx=ctx, all=True) == [] and not r.errors
    with images.open_store(ctx) as s:
        assert list(s.blobs.walk()) == [], "everything unreferenced is gone"


def test_filters(ctx: Context, family: dict[str, images.Image]) -> None:
    def names(*filters: str, **kw: object) -> list[str]:
        return sorted(n for i in images.list(ctx=ctx, filters=filters, **kw) for n in i.names) or sorted(
            i.short_id for i in images.list(ctx=ctx, filters=filters, **kw)
        )

    assert names("label=derived") == ["localhost/child:latest", "localhost/sibling:latest"]
    assert names("label=derived=child") == ["localhost/child:latest"]
    assert names("label=org.example.fixture=latest") == ["localhost/small:latest"]
    assert names("reference=chi*") == ["localhost/child:latest"]
    assert names("reference=localhost/s*") == ["localhost/sibling:latest", "localhost/small:latest"]
    assert names("reference=*:latest", "reference=nomatch") == names()
    assert names("before=child") == ["localhost/small:latest"], "small (2023) is older than child (2024)"
    assert names("since=small") == ["localhost/child:latest", "localhost/sibling:latest"]
    assert names("until=2024-01-01T00:00:00Z") == ["localhost/small:latest"]
    assert names("dangling=true") == []
    assert len(images.list(ctx=ctx, names=["small"])) == 1
    images.untag("small", ctx=ctx)
    assert names("dangling=true") == [family["small"].short_id]
    images.untag("sibling", ctx=ctx)  # an untagged parent is intermediate, not dangling
    assert names("dangling=true") == [family["small"].short_id]
    assert names(f"id={family['child'].id.encoded[:6]}") == ["localhost/child:latest"]
    with pytest.raises(UsageError, match="invalid filter 'colour'"):
        images.list(ctx=ctx, filters=["colour=red"])
    with pytest.raises(UsageError, match="expected true or false"):
        images.list(ctx=ctx, filters=["dangling=maybe"])


def test_intermediate_images_hidden_without_all(ctx: Context, family: dict[str, images.Image]) -> None:
    images.untag("child", ctx=ctx)  # child is now untagged and small is built on top of its layers
    shown = {i.id for i in images.list(ctx=ctx)}
    assert family["child"].id not in shown
    assert family["child"].id in {i.id for i in images.list(ctx=ctx, all=True)}
    assert [i.id for i in images.list(ctx=ctx, filters=["intermediate=true"], all=True)] == [
        family["child"].id
    ]


def test_history_rows_and_ids(ctx: Context, family: dict[str, images.Image]) -> None:
    rows = images.history("small", ctx=ctx)
    small = family["small"]
    assert [r.created_by for r in rows] == [
        "refimage: empty layer",
        "refimage: whiteouts, opaque dir, hardlink, modes",
        "refimage: busybox base",
    ]
    assert [r.size for r in rows] == [x.diff_size for x in reversed(small.layers)]
    # the row of small's 2nd layer is child's top: podman shows the local image's ID there
    assert [r.id for r in rows] == [small.id, family["child"].id, family["sibling"].id]
    rows = images.history("child", ctx=ctx)
    assert rows[0].empty_layer and rows[0].size == 0 and rows[0].created_by.endswith("LABEL derived=child")
    assert rows[0].id == family["child"].id and rows[1].id == "<missing>"


def test_tree_shares_layers(ctx: Context, family: dict[str, images.Image]) -> None:
    tree = images.tree(ctx)
    assert len(tree.roots) == 1, "all three images start from the same base layer"
    root = tree.roots[0]
    assert [i.id for i in root.images] == [family["sibling"].id]
    (second,) = root.children
    assert [i.id for i in second.images] == [family["child"].id]
    (third,) = second.children
    assert [i.id for i in third.images] == [family["small"].id]
    assert third.virtual_size == family["small"].size
    text = render_text(tree, str)
    lines = text.splitlines()
    assert lines[0].startswith("└─" + root.chain_id.split(":")[1][:12])
    assert lines[2].startswith("    └─") and "Tags: localhost/small:latest" in lines[2]
    dot = render_dot(tree, str)
    assert dot.startswith("digraph") and dot.count("->") == 3  # base edge + 2 layer edges
    branch = images.tree(ctx, "child")
    assert branch.roots[0].children[0].images[0].id == family["child"].id
    assert branch.roots[0].images == [], "the sibling is not on child's branch"


def test_exists_and_gc(ctx: Context, small: images.Image) -> None:
    assert images.exists("small", ctx=ctx) and not images.exists("nope", ctx=ctx)
    with Store.open(ctx) as s:
        s.put(b"stray")
    assert images.gc(ctx=ctx).removed_blobs
    assert images.exists("small", ctx=ctx)
