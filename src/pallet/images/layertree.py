"""The layer graph of all local images, as Dockviz drew it: layers keyed by chain ID, images at the tips.

Two images that share base layers share the same nodes (same chain IDs), so the text tree and the
Graphviz output show exactly what is stored once and what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pallet.store import Image


@dataclass
class TreeNode:
    chain_id: str
    diff_id: str
    size: int  # this layer, uncompressed
    virtual_size: int  # this layer and all below it
    children: list[TreeNode] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)  # images whose top layer this is


@dataclass
class LayerTree:
    roots: list[TreeNode]
    layerless: list[Image]  # images without any layer (they hang off nothing)


def build(images: Sequence[Image]) -> LayerTree:
    nodes: dict[str, TreeNode] = {}
    roots: list[TreeNode] = []
    layerless: list[Image] = []
    for img in sorted(images, key=lambda i: (i.created_ts, i.id)):
        if not img.layers:
            layerless.append(img)
            continue
        parent: TreeNode | None = None
        total = 0
        for layer in img.layers:
            total += layer.diff_size
            node = nodes.get(layer.chain_id)
            if node is None:
                node = nodes[layer.chain_id] = TreeNode(layer.chain_id, layer.diff_id, layer.diff_size, total)
                (parent.children if parent is not None else roots).append(node)
            parent = node
        assert parent is not None
        parent.images.append(img)
    return LayerTree(roots, layerless)


def only(tree: LayerTree, image: Image) -> LayerTree:
    """The path from the root to ``image``'s top layer, and everything built on top of it."""
    if not image.layers:
        return LayerTree([], [image])
    chain = list(image.chain_ids)

    def prune(nodes: list[TreeNode], depth: int) -> list[TreeNode]:
        out = []
        for n in nodes:
            if depth < len(chain) and n.chain_id == chain[depth]:
                kids = n.children if depth == len(chain) - 1 else prune(n.children, depth + 1)
                out.append(
                    TreeNode(
                        n.chain_id,
                        n.diff_id,
                        n.size,
                        n.virtual_size,
                        kids,
                        n.images if depth == len(chain) - 1 else [],
                    )
                )
        return out

    return LayerTree(prune(tree.roots, 0), [])


def _label(img: Image) -> str:
    return ", ".join(img.names) if img.names else "<none>"


def render_text(tree: LayerTree, human: Callable[[float], str], no_trunc: bool = False) -> str:
    """Dockviz's ``images -t``: one line per layer, tags at the layers images end on."""
    lines: list[str] = []

    def short(d: str) -> str:
        return d if no_trunc else d.split(":", 1)[-1][:12]

    def walk(nodes: list[TreeNode], prefix: str) -> None:
        for i, n in enumerate(nodes):
            last = i == len(nodes) - 1
            text = (
                f"{prefix}{'└─' if last else '├─'}{short(n.chain_id)} Virtual Size: {human(n.virtual_size)}"
            )
            if n.images:
                text += " " + "; ".join(f"Image: {short(img.id)} Tags: {_label(img)}" for img in n.images)
            lines.append(text)
            walk(n.children, prefix + ("  " if last else "│ "))

    walk(tree.roots, "")
    for img in tree.layerless:
        lines.append(f"└─<no layers> Image: {short(img.id)} Tags: {_label(img)}")
    return "\n".join(lines) + ("\n" if lines else "")


def render_dot(tree: LayerTree, human: Callable[[float], str]) -> str:
    """Dockviz's ``images -d``: a Graphviz digraph, image tips as filled boxes."""
    out = ["digraph pallet {", " base [style=invisible]"]

    def nid(n: TreeNode) -> str:
        return n.chain_id.split(":", 1)[-1][:12]

    def walk(nodes: list[TreeNode]) -> None:
        for n in nodes:
            for c in n.children:
                out.append(f' "{nid(n)}" -> "{nid(c)}"')
            if n.images:
                tags = "\\n".join(
                    _dot_escape(name) for img in n.images for name in (img.names or ("<none>",))
                )
                out.append(
                    f' "{nid(n)}" [label="{nid(n)}\\n{tags}\\n{human(n.virtual_size)}",shape=box,'
                    'fillcolor="paleturquoise",style="filled,rounded"];'
                )
            walk(n.children)

    for r in tree.roots:
        out.append(f' base -> "{nid(r)}" [style=invis]')
    walk(tree.roots)
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')
