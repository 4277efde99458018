"""Pull and push: registries.conf, the registry client, the image store and layer storage composed.

A pull streams each layer once: registry → digest check → blob store, and the same bytes →
decompress → diff-ID check → layer storage, so an image is unpacked and ready to run when
``pull`` returns (as podman does). Layers download and unpack in parallel where the graph
driver allows it. Nothing is registered until every blob and layer is verified and in place.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pallet.content import Digest, Index, Manifest, Platform, canonical_json
from pallet.content import mediatypes as mt
from pallet.errors import ContentError, PalletError, RegistryError, UsageError

if TYPE_CHECKING:
    from pallet.config.auth import Credentials
    from pallet.config.registries import PullSource
    from pallet.context import Context
    from pallet.reference import Reference
    from pallet.registry.client import RegistryClient
    from pallet.store import Image, Store
    from pallet.store.blobs import BlobWriter

log = logging.getLogger(__name__)


class Progress:
    """The events a transfer reports (``pallet.cli.progress`` renders them); the default is silent."""

    def start(self, ident: str, total: int | None = None, kind: str = "blob") -> None: ...

    def advance(self, ident: str, n: int) -> None: ...

    def finish(self, ident: str, status: str = "done") -> None: ...

    def message(self, text: str) -> None: ...


class PullError(RegistryError):
    """No candidate reference could be pulled; the message lists what was tried and why."""


@dataclass(frozen=True)
class PullResult:
    image: Image
    reference: Reference
    manifest_digest: Digest


def parse_creds(text: str) -> Credentials:
    """``--creds USER[:PASSWORD]`` as podman takes it."""
    from pallet.config.auth import Credentials

    user, sep, password = text.partition(":")
    if not user:
        raise UsageError("--creds: expected USERNAME[:PASSWORD]")
    if not sep:
        import getpass

        password = getpass.getpass(f"Password for {user}: ")
    return Credentials(username=user, password=password)


def _context(ctx: Context | None, authfile: str | Path | None, tls_verify: bool | None) -> Context:
    from pallet import context as _ctx

    ctx = ctx or _ctx.default()
    changes: dict[str, Any] = {}
    if authfile is not None:
        changes["auth_file"] = Path(authfile)
    if tls_verify is not None:
        changes["tls_verify"] = tls_verify
    return ctx.with_(**changes) if changes else ctx


@dataclass(frozen=True)
class Transport:
    """How hard to try: per-request timeout (seconds), retries and the first retry's delay.

    Defaults come from ``$PALLET_REGISTRY_TIMEOUT`` / ``$PALLET_REGISTRY_RETRIES`` when set, so a
    hung registry can be given up on sooner without a flag on every command.
    """

    timeout: float | None = None
    retries: int | None = None
    retry_delay: float | None = None

    def options(self) -> dict[str, Any]:
        import os

        opts: dict[str, Any] = {}
        timeout = self.timeout if self.timeout is not None else os.environ.get("PALLET_REGISTRY_TIMEOUT")
        retries = self.retries if self.retries is not None else os.environ.get("PALLET_REGISTRY_RETRIES")
        try:
            if timeout is not None:
                opts["timeout"] = float(timeout)
                opts["connect_timeout"] = min(float(timeout), 10.0)
            if retries is not None:
                opts["retries"] = int(retries)
        except ValueError:
            raise UsageError(f"invalid registry timeout {timeout!r} or retries {retries!r}") from None
        if self.retry_delay is not None:
            opts["backoff"] = self.retry_delay
        return opts


def _client(source: PullSource, ctx: Context, creds: Credentials | None,
            transport: Transport | None = None) -> RegistryClient:
    from pallet.registry.client import RegistryClient

    return RegistryClient(source.registry, ctx, insecure=source.insecure, auth=creds,
                          **(transport or Transport()).options())


# -- pull ---------------------------------------------------------------------------------------------
def pull(
    name: str,
    ctx: Context | None = None,
    *,
    platform: Platform | str | None = None,
    tls_verify: bool | None = None,
    authfile: str | Path | None = None,
    creds: Credentials | None = None,
    progress: Progress | None = None,
    unpack: bool = True,
    transport: Transport | None = None,
) -> PullResult:
    """Pull ``name`` (short names resolved through registries.conf) into the local store.

    The platform defaults to this host's; an index is resolved to its entry for it. With
    ``unpack`` (the default) every layer is also applied to layer storage during the download.
    """
    from pallet.config import policy, registries
    from pallet.registry.client.errors import NotFoundError, RegistryUnavailable

    ctx = _context(ctx, authfile, tls_verify)
    progress = progress or Progress()
    want = Platform.parse(platform) if isinstance(platform, str) else platform
    conf = registries.load(ctx)
    # an ambiguous short name is asked about on a terminal, as podman does; the answer stands
    # (as an alias) once it pulled
    picked: dict[str, Reference] = {}

    def choose(short: str, options: list[Reference]) -> Reference | None:
        chosen = registries.terminal_choice(short, options)
        if chosen is not None:
            picked[short] = chosen
        return chosen

    candidates = conf.resolve(name, choose=choose)
    pol = policy.load()
    failures: list[str] = []
    for ref in candidates:
        pol.check(ref)
        sources = conf.endpoints(ref)
        for source in sources:
            where = str(source.reference)
            if len(candidates) > 1 or source.mirror:
                progress.message(f"Trying to pull {where}...")
            try:
                with _client(source, ctx, creds, transport) as client:
                    resolution = client.resolve_image(source.repository, source.reference.object, want)
                    result = _fetch(client, source, ref, resolution, ctx, progress, unpack, want)
                    for short, chosen in picked.items():
                        registries.record_alias(short, chosen)
                    return result
            except NotFoundError as e:
                failures.append(f"{where}: {e}")
            except RegistryUnavailable as e:
                if not source.mirror and len(candidates) == 1:
                    raise
                failures.append(f"{where}: {e}")
            except RegistryError as e:
                if source.mirror:  # a broken mirror falls through to the next source, as podman does
                    failures.append(f"{where}: {e}")
                    continue
                raise
    if len(failures) == 1:
        raise PullError(f"pulling {name}: {failures[0]}")
    raise PullError(f"pulling {name}: no candidate worked: " + "; ".join(failures))


class _TeeReader:
    """Reads a verified registry stream, copying every byte into a blob-store writer on the way."""

    def __init__(self, source: BinaryIO, writer: BlobWriter, on_bytes: Callable[[int], None]) -> None:
        self._source = source
        self._writer = writer
        self._on_bytes = on_bytes
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n if n is not None and n >= 0 else 1 << 20)
        if data:
            self._writer.write(data)
            self._on_bytes(len(data))
        elif n != 0:
            self.eof = True
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to EOF: the layer was already on disk, but the blob store still wants the bytes."""
        while not self.eof:
            self.read(1 << 20)

    def close(self) -> None:
        """The applier is done with us; the download goes on until :meth:`drain` (see _LayerJob)."""

    def release(self) -> None:
        self._source.close()


class _LayerJob:
    """One layer of a pull: where its bytes come from, and what to do with them."""

    def __init__(self, store: Store, client: RegistryClient, repo: str, desc: Any,
                 progress: Progress) -> None:
        self.store, self.client, self.repo, self.desc, self.progress = store, client, repo, desc, progress
        self.tee: _TeeReader | None = None
        self.writer: BlobWriter | None = None
        self.lock = threading.Lock()

    def open(self) -> BinaryIO:
        """The compressed bytes for the applier: from the store if it has them, else downloaded."""
        d = self.desc
        if self.store.has_blob(d.digest):
            return self.store.open_blob(d.digest)
        ident = str(d.digest)
        self.progress.start(ident, d.size)
        reader = self.client.open_blob(self.repo, d.digest, d.size)
        self.writer = self.store.writer(d.digest, d.size)
        self.tee = _TeeReader(reader, self.writer, lambda n: self.progress.advance(ident, n))
        return self.tee  # type: ignore[return-value]

    def complete(self) -> None:
        """After a successful apply: make sure the blob is in the store, verified."""
        d = self.desc
        if self.tee is not None:
            assert self.writer is not None
            try:
                self.tee.drain()
                self.writer.commit()
            finally:
                self.tee.release()
            self.progress.finish(str(d.digest), "done")
        elif not self.store.has_blob(d.digest):
            # the layer was on disk already but its blob was not (e.g. pruned): fetch it alone
            ident = str(d.digest)
            self.progress.start(ident, d.size)
            reader = self.client.open_blob(self.repo, d.digest, d.size)
            with contextlib.closing(reader) as r, self.store.writer(d.digest, d.size) as w:
                while chunk := r.read(1 << 20):
                    w.write(chunk)
                    self.progress.advance(ident, len(chunk))
                w.commit()
            self.progress.finish(ident, "done")
        else:
            self.progress.finish(str(d.digest), "skipped: already exists")

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.abort()
        if self.tee is not None:
            with contextlib.suppress(Exception):
                self.tee.release()


def _fetch(
    client: RegistryClient,
    source: PullSource,
    ref: Reference,
    resolution: Any,
    ctx: Context,
    progress: Progress,
    unpack: bool,
    want: Platform | None,
) -> PullResult:
    from pallet.store import Store

    manifest: Manifest = resolution.manifest
    digest: Digest = resolution.digest
    index: Index | None = getattr(resolution, "index", None)
    repo = source.repository
    with Store.open(ctx) as store:
        progress.message("Getting image source signatures")
        config = _fetch_config(store, client, repo, manifest, progress)
        _check_platform(config, want, ref, progress)
        diff_ids = _diff_ids(config, manifest)
        jobs = [_LayerJob(store, client, repo, d, progress) for d in manifest.layers]
        diff_sizes: dict[str, int] = {}
        try:
            if unpack and jobs:
                from pallet.storage.layers import LayerSource, LayerStore

                layers = LayerStore(ctx).apply_image(
                    [
                        LayerSource(open=job.open, media_type=job.desc.media_type, diff_id=diff_ids[i],
                                    compressed_digest=str(job.desc.digest), compressed_size=job.desc.size)
                        for i, job in enumerate(jobs)
                    ]
                )
                diff_sizes = {str(layer.diff_id): layer.size for layer in layers}
            for job in jobs:
                job.complete()
        except BaseException:
            for job in jobs:
                job.abort()
            raise
        progress.message("Writing manifest to image destination")
        names = [str(ref)] if ref.tag and ref.digest is None else []
        image = store.add_image(
            manifest,
            config=config,
            names=names,
            repo_digests=[f"{ref.name}@{index.digest if index is not None else digest}"]
            + ([f"{ref.name}@{digest}"] if index is not None else []),
            index=index,
            diff_sizes=diff_sizes or None,
        )
    return PullResult(image, ref, digest)


def _fetch_config(store: Store, client: RegistryClient, repo: str, manifest: Manifest,
                  progress: Progress) -> bytes:
    desc = manifest.config
    if store.has_blob(desc.digest):
        progress.finish(str(desc.digest), "skipped: already exists")
        return store.read_blob(desc.digest)
    progress.start(str(desc.digest), desc.size, kind="config")
    data = client.get_blob(repo, desc.digest, desc.size)
    store.put(data, desc.digest)
    progress.finish(str(desc.digest), "done")
    return data


def _diff_ids(config: bytes, manifest: Manifest) -> list[str | None]:
    import json

    try:
        ids = json.loads(config).get("rootfs", {}).get("diff_ids") or []
    except (ValueError, AttributeError):
        raise ContentError(f"image config {manifest.config.digest} is not valid JSON") from None
    layers = [d for d in manifest.layers]
    if len(ids) != len(layers):
        raise ContentError(
            f"image config {manifest.config.digest} lists {len(ids)} diff IDs for {len(layers)} layers"
        )
    return [str(Digest(i)) for i in ids]


def _check_platform(config: bytes, want: Platform | None, ref: Reference, progress: Progress) -> None:
    import json

    try:
        doc = json.loads(config)
    except ValueError:
        raise ContentError(f"the image config of {ref} is not valid JSON") from None
    have = Platform(str(doc.get("os", "")), str(doc.get("architecture", "")), str(doc.get("variant", "")))
    target = want or Platform.host()
    if have.os and have.architecture and not target.matches(have):
        if want is not None:
            raise ContentError(f"{ref} is for {have}, not the requested platform {want}")
        progress.message(f"WARNING: image platform ({have}) does not match the expected platform ({target})")


def pull_all_tags(name: str, ctx: Context | None = None, **kw: Any) -> list[PullResult]:
    """``pull --all-tags``: every tag of a repository."""
    from pallet.config import registries
    from pallet.reference import parse

    ctx = _context(ctx, kw.pop("authfile", None), kw.pop("tls_verify", None))
    ref = registries.load(ctx).resolve(name)[0]
    if parse(name).tag or ref.digest:
        raise UsageError("--all-tags takes a repository without a tag or digest")
    source = registries.load(ctx).endpoints(ref.name_only())[-1]
    with _client(source, ctx, kw.get("creds"), kw.get("transport")) as client:
        tags = list(client.tags(source.repository))
    return [pull(f"{ref.name}:{t}", ctx, **kw) for t in tags]


# -- push ---------------------------------------------------------------------------------------------
def _convert(manifest: Manifest, fmt: str | None) -> tuple[bytes, str]:
    """The manifest to push, in the format asked: "oci", "v2s2"/"docker", or None (as stored)."""
    if fmt is None or fmt == "":
        return manifest.raw, manifest.media_type
    fmt = {"docker": "v2s2", "oci": "oci", "v2s2": "v2s2"}.get(fmt)
    if fmt is None:
        raise UsageError("--format must be oci or v2s2 (docker)")
    target = mt.OCI_MANIFEST if fmt == "oci" else mt.DOCKER_MANIFEST
    if manifest.media_type == target:
        return manifest.raw, manifest.media_type
    conv = mt.to_oci if fmt == "oci" else mt.to_docker
    if fmt == "v2s2" and any(mt.LAYER_COMPRESSION.get(d.media_type) == "zstd" for d in manifest.layers):
        raise UsageError("zstd layers cannot be pushed as Docker schema 2 (it has no zstd); use --format oci")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": target,
        "config": {**manifest.config.to_dict(), "mediaType": conv(manifest.config.media_type)},
        "layers": [{**d.to_dict(), "mediaType": conv(d.media_type)} for d in manifest.layers],
    }
    if manifest.annotations and fmt == "oci":
        doc["annotations"] = manifest.annotations
    return canonical_json(doc), target


def push(
    name: str,
    destination: str | None = None,
    ctx: Context | None = None,
    *,
    tls_verify: bool | None = None,
    authfile: str | Path | None = None,
    creds: Credentials | None = None,
    progress: Progress | None = None,
    format: str | None = None,
    chunk_size: int | None = None,
    parallel: int = 3,
    transport: Transport | None = None,
) -> Digest:
    """Push a local image to ``destination`` (default: its own name). Returns the manifest digest."""
    from concurrent.futures import ThreadPoolExecutor

    from pallet.config import registries
    from pallet.reference import parse
    from pallet.store import Store

    ctx = _context(ctx, authfile, tls_verify)
    progress = progress or Progress()
    with Store.open(ctx) as store:
        image = store.resolve(name).image
        dest_text = destination or _default_destination(name, image)
        ref = parse(dest_text.removeprefix("docker://"))
        if not ref.domain:
            raise UsageError(f"{dest_text}: the destination needs a registry (localhost:5000/{ref.path})")
        conf = registries.load(ctx)
        target = conf.push_endpoint(ref)
        manifest = _stored_manifest(store, image)
        raw, media_type = _convert(manifest, format)
        blobs = [manifest.config, *manifest.layers]
        with _client(target, ctx, creds, transport) as client:
            repo = target.repository
            mount_from = _mount_candidates(image, target.registry, repo)

            def one(desc: Any) -> None:
                ident = str(desc.digest)
                progress.start(ident, desc.size, kind="config" if desc is manifest.config else "blob")
                with store.open_blob(desc.digest) as f:
                    counted = _Counting(f, lambda n: progress.advance(ident, n))
                    outcome = client.upload_blob(repo, counted, desc.digest, desc.size, chunk_size=chunk_size,
                                                 mount_from=mount_from)
                progress.finish(ident, _PUSH_STATUS.get(outcome, "done"))

            progress.message("Getting image source signatures")
            with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="pallet-push") as pool:
                for f in [pool.submit(one, d) for d in blobs]:
                    f.result()
            progress.message("Writing manifest to image destination")
            digest = client.put_manifest(repo, ref.tag or (str(ref.digest) if ref.digest else "latest"), raw,
                                         media_type)
    with Store.open(ctx) as store, contextlib.suppress(PalletError):
        store.add_repo_digest(image.id, f"{ref.name}@{digest}")
    return digest


_PUSH_STATUS = {"exists": "skipped: already exists", "mounted": "skipped: mounted from another repository"}


def _default_destination(name: str, image: Image) -> str:
    from pallet.reference import parse

    try:
        ref = parse(name)
    except PalletError:
        ref = None
    if ref is not None and ref.domain:
        return name
    for n in image.names:
        return n
    raise UsageError(f"{name} has no name to push to: give a destination")


def _stored_manifest(store: Store, image: Image) -> Manifest:
    from pallet.content import parse as parse_manifest

    raw = store.read_blob(image.manifest_digest)
    m = parse_manifest(raw)
    if not isinstance(m, Manifest):
        raise ContentError(f"image {image.short_id}: stored manifest is an index")
    return m


def _mount_candidates(image: Image, registry: str, repo: str) -> str | None:
    """A repository on the same registry that has this image already (for cross-repository mounts)."""
    from pallet.reference import parse

    for rd in image.repo_digests:
        try:
            r = parse(rd)
        except PalletError:
            continue
        if r.domain == registry and r.path != repo:
            return r.path
    return None


class _Counting:
    """A file wrapper that reports bytes as an upload reads them."""

    def __init__(self, f: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        self._f, self._on = f, on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            self._on(len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(1 << 20):
            yield chunk

    def seek(self, *a: Any) -> int:
        return self._f.seek(*a)

    def tell(self) -> int:
        return self._f.tell()
