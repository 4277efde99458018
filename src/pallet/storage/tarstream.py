"""Reading a layer stream in one pass: bytes in, hashes and tar entries out.

The pipeline is ``source → [compressed-digest hasher] → decompressor → diff-ID hasher → tar
headers``. Decompression and hashing run in a worker thread (isal, zstandard and hashlib all
release the GIL on big buffers), so they overlap with the extractor writing files in the calling
thread. Nothing is staged: memory is a few 1 MiB blocks whatever the layer size.

The tar parser is our own because :mod:`tarfile`'s stream mode copies its whole read buffer on
every 512-byte header read (quadratic with big buffers, slow with small ones). It reads ustar,
GNU (long names, base-256 numbers) and PAX (long names, large ids, sub-second mtimes,
``SCHILY.xattr.*``, ``LIBARCHIVE.xattr.*``, ``hdrcharset=BINARY``) and GNU's sparse files
(old GNU, PAX 0.0, 0.1, 1.0). Names stay ``bytes`` end to end, so non-UTF-8 names round-trip
exactly.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import BinaryIO

from pallet.content import compression as comp
from pallet.content.digest import Hasher
from pallet.errors import ContentError, PalletError, StorageError

BLOCK = 1 << 20

REG, AREG, LNK, SYM, CHR, BLK, DIR, FIFO, CONT = b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7"
PAX, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = b"x", b"g", b"L", b"K", b"S"
GNU_DUMPDIR, GNU_VOLHDR, GNU_MULTIVOL, GNU_NAMES = b"D", b"V", b"M", b"N"

_ZERO_BLOCK = bytes(512)


class TarFormatError(StorageError):
    """The layer is not a well-formed tar stream."""


class Entry:
    """One tar member after PAX/GNU extensions are folded in. ``name``/``linkname`` are bytes."""

    __slots__ = ("devmajor", "devminor", "gid", "linkname", "mode", "mtime_ns", "name", "realsize",
                 "size", "sparse", "type", "uid", "xattrs")

    def __init__(self) -> None:
        self.name = b""
        self.linkname = b""
        self.type = REG
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.size = 0
        self.mtime_ns = 0
        self.devmajor = 0
        self.devminor = 0
        self.xattrs: dict[str, bytes] | None = None
        #: a sparse file (GNU's formats): its data regions as (offset, length), in order, whose
        #: bytes follow in the stream (``size`` of them in all); the file is ``realsize`` long
        self.sparse: list[tuple[int, int]] | None = None
        self.realsize = 0

    @property
    def display(self) -> str:
        return self.name.decode("utf-8", "backslashreplace")

    def __repr__(self) -> str:
        return f"Entry({self.display!r}, type={self.type!r}, size={self.size})"


def _num(field: bytes, what: str) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256 (high bit set)."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:  # negative: two's complement over the whole field
            value = int.from_bytes(field, "big") - (1 << (8 * len(field)))
        return value
    s = field.split(b"\0", 1)[0].strip(b" ")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise TarFormatError(f"bad {what} field {field!r} in tar header") from None


def _pax_time_ns(value: bytes) -> int:
    """PAX times are decimal seconds with an optional fraction; keep nanoseconds exactly."""
    s = value.strip()
    neg = s.startswith(b"-")
    if neg:
        s = s[1:]
    whole, _, frac = s.partition(b".")
    try:
        ns = int(whole or b"0") * 1_000_000_000 + int((frac + b"000000000")[:9] or b"0")
    except ValueError:
        raise TarFormatError(f"bad PAX time {value!r}") from None
    return -ns if neg else ns


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """PAX extended header records: ``"%d %s=%s\\n"`` repeated. Keys and values stay bytes."""
    out: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0:  # NUL padding after the last record
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise TarFormatError("malformed PAX header: record without a length")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise TarFormatError(f"malformed PAX header: bad record length {data[pos:sp]!r}") from None
        if length <= sp - pos or pos + length > end or data[pos + length - 1] != 0x0A:
            raise TarFormatError("malformed PAX header: record length does not match")
        record = data[sp + 1:pos + length - 1]
        key, eq, value = record.partition(b"=")
        if not eq:
            raise TarFormatError(f"malformed PAX header: record {record[:40]!r} has no '='")
        if key in _REPEATED and key in out:  # sparse format 0.0 repeats these, in pairs
            out[key] += b"," + value
        else:
            out[key] = value
        pos += length
    return out


_REPEATED = (b"GNU.sparse.offset", b"GNU.sparse.numbytes")


class Feed:
    """Buffered reads over a stream of blocks with exact-size takes and zero-copy writes."""

    __slots__ = ("_blocks", "buf", "pos")

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self.buf = b""
        self.pos = 0

    def _more(self) -> bool:
        data = next(self._blocks, b"")
        if not data:
            return False
        rest = len(self.buf) - self.pos
        self.buf = self.buf[self.pos:] + data if rest else data
        self.pos = 0
        return True

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer at end of stream."""
        while len(self.buf) - self.pos < n:
            if not self._more():
                break
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def skip(self, n: int) -> None:
        while n > 0:
            avail = len(self.buf) - self.pos
            if avail == 0:
                if not self._more():
                    raise TarFormatError("tar stream ends inside a member")
                continue
            k = min(avail, n)
            self.pos += k
            n -= k

    def chunks(self, n: int) -> Iterator[memoryview]:
        """Yield ``n`` bytes as views into the buffer (valid until the next call)."""
        while n > 0:
            avail = len(self.buf) - self.pos
            if avail == 0:
                if not self._more():
                    raise TarFormatError("tar stream ends inside a member")
                continue
            k = min(avail, n)
            yield memoryview(self.buf)[self.pos:self.pos + k]
            self.pos += k
            n -= k

    def drain(self) -> None:
        """Consume the rest of the stream (trailing zero records) so it is hashed whole."""
        self.pos = len(self.buf)
        while self._more():
            self.pos = len(self.buf)


def read_entries(feed: Feed) -> Iterator[Entry]:
    """Tar members from ``feed``. The caller must consume each regular file's ``size`` bytes
    (``feed.chunks``/``feed.skip``) before asking for the next entry; padding is handled here."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] | None = None
    long_name: bytes | None = None
    long_link: bytes | None = None
    zero_blocks = 0
    while True:
        hdr = feed.take(512)
        if len(hdr) < 512:
            if not hdr and zero_blocks == 0 and pax is None:
                # no end-of-archive marker at all: accept as Go's and GNU tar's readers do
                return
            if not hdr:
                return
            raise TarFormatError("tar stream ends inside a header")
        if hdr == _ZERO_BLOCK:
            zero_blocks += 1
            if zero_blocks == 2:
                return
            continue
        if zero_blocks:
            # a single zero block followed by data: GNU tar warns and goes on
            zero_blocks = 0
        chksum = _num(hdr[148:156], "checksum")
        unsigned = sum(hdr[:148]) + 256 + sum(hdr[156:])
        if chksum != unsigned:
            # some old tars summed signed chars
            signed = unsigned - 256 * sum(1 for b in hdr[:148] + hdr[156:] if b > 127)
            if chksum != signed:
                raise TarFormatError("bad tar header checksum (not a tar stream, or corrupt)")
        typ = hdr[156:157]
        size = _num(hdr[124:136], "size")
        if typ in (PAX, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK):
            if size > 64 << 20:
                raise TarFormatError(f"tar extended header of {size} bytes is too large")
            data = feed.take(size)
            if len(data) < size:
                raise TarFormatError("tar stream ends inside an extended header")
            feed.skip(-size % 512)
            if typ == PAX:
                pax = (pax or {}) | parse_pax(data)
            elif typ == PAX_GLOBAL:
                global_pax.update(parse_pax(data))
            elif typ == GNU_LONGNAME:
                long_name = data.split(b"\0", 1)[0]
            else:
                long_link = data.split(b"\0", 1)[0]
            continue

        e = Entry()
        magic = hdr[257:263]
        name = hdr[0:100].split(b"\0", 1)[0]
        if magic == b"ustar\x00":  # POSIX ustar: prefix field holds the leading directories
            prefix = hdr[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        e.name = name
        e.linkname = hdr[157:257].split(b"\0", 1)[0]
        e.mode = _num(hdr[100:108], "mode") & 0o7777
        e.uid = _num(hdr[108:116], "uid")
        e.gid = _num(hdr[116:124], "gid")
        e.size = size
        e.mtime_ns = _num(hdr[136:148], "mtime") * 1_000_000_000
        if typ in (CHR, BLK):
            e.devmajor = _num(hdr[329:337], "devmajor")
            e.devminor = _num(hdr[337:345], "devminor")
        if long_name is not None:
            e.name, long_name = long_name, None
        if long_link is not None:
            e.linkname, long_link = long_link, None
        ext = global_pax | pax if pax is not None else global_pax
        pax = None
        if ext:
            _apply_pax(e, ext)
        if typ in (AREG, CONT):
            typ = DIR if e.name.endswith(b"/") and typ == AREG else REG
        elif typ == GNU_DUMPDIR:
            typ = DIR
        elif typ == GNU_SPARSE:
            _old_gnu_sparse(e, hdr, feed)
            typ = REG
        elif b"GNU.sparse.major" in ext or b"GNU.sparse.size" in ext or b"GNU.sparse.map" in ext:
            _pax_sparse(e, ext, feed)
            typ = REG
        elif typ in (GNU_VOLHDR, GNU_MULTIVOL, GNU_NAMES):
            raise TarFormatError(f"entry {e.display!r}: GNU multi-volume tar members are not supported")
        elif typ not in (REG, LNK, SYM, CHR, BLK, DIR, FIFO):
            typ = REG  # unknown types are regular files, as in GNU tar and Python's tarfile
        e.type = typ
        yield e
        if typ == REG:
            feed.skip(-e.size % 512)
        elif e.size:
            # non-file members may carry data (rare); it is not ours to write
            feed.skip(e.size + (-e.size % 512))


def _sparse_pairs(numbers: list[int], e: Entry) -> list[tuple[int, int]]:
    if len(numbers) % 2:
        raise TarFormatError(f"entry {e.display!r}: odd number of values in its sparse map")
    return list(zip(numbers[0::2], numbers[1::2], strict=True))


def _check_sparse(e: Entry, regions: list[tuple[int, int]], realsize: int) -> None:
    """The map must be ordered, inside the file, and account for exactly the stored bytes."""
    end = 0
    for off, n in regions:
        if off < end or n < 0 or off + n > realsize:
            raise TarFormatError(f"entry {e.display!r}: bad sparse map (region {off}+{n} of {realsize})")
        end = off + n
    if sum(n for _, n in regions) != e.size:
        raise TarFormatError(f"entry {e.display!r}: its sparse map does not match its {e.size} stored bytes")
    e.sparse, e.realsize = regions, realsize


def _old_gnu_sparse(e: Entry, hdr: bytes, feed: Feed) -> None:
    """GNU's original format (type 'S'): up to 4 regions in the header, 21 more in each
    extension block that follows it, and the real size at byte 483."""
    numbers: list[int] = []

    def regions(block: bytes, count: int) -> None:
        for i in range(count):
            off = block[24 * i:24 * i + 12]
            if not off.strip(b"\0"):
                return
            numbers.append(_num(off, "sparse offset"))
            numbers.append(_num(block[24 * i + 12:24 * i + 24], "sparse length"))

    regions(hdr[386:482], 4)
    extended = hdr[482]
    while extended:
        block = feed.take(512)
        if len(block) < 512:
            raise TarFormatError("tar stream ends inside a sparse map")
        regions(block[:504], 21)
        extended = block[504]
    _check_sparse(e, _sparse_pairs(numbers, e), _num(hdr[483:495], "sparse real size"))


def _pax_sparse(e: Entry, ext: dict[bytes, bytes], feed: Feed) -> None:
    """GNU's PAX sparse formats: 0.0 (repeated offset/numbytes records), 0.1 (``GNU.sparse.map``)
    and 1.0 (the map in decimal lines at the start of the data, padded to a block)."""
    name = ext.get(b"GNU.sparse.name")
    if name:
        e.name = name
    try:
        if ext.get(b"GNU.sparse.major") == b"1":
            minor = ext.get(b"GNU.sparse.minor", b"0")
            if minor != b"0":
                version = "1." + minor.decode(errors="replace")
                raise TarFormatError(f"entry {e.display!r}: unknown sparse format {version}")
            realsize = int(ext[b"GNU.sparse.realsize"])
            numbers = _read_v1_map(e, feed)
        elif b"GNU.sparse.map" in ext:
            realsize = int(ext[b"GNU.sparse.size"])
            raw = ext[b"GNU.sparse.map"]
            numbers = [int(x) for x in raw.split(b",")] if raw else []
        else:
            realsize = int(ext[b"GNU.sparse.size"])
            offsets, lengths = ext.get(b"GNU.sparse.offset", b""), ext.get(b"GNU.sparse.numbytes", b"")
            offs = [int(x) for x in offsets.split(b",")] if offsets else []
            lens = [int(x) for x in lengths.split(b",")] if lengths else []
            if len(offs) != len(lens):
                raise TarFormatError(f"entry {e.display!r}: unpaired sparse offsets and lengths")
            numbers = [v for pair in zip(offs, lens, strict=True) for v in pair]
    except (KeyError, ValueError):
        raise TarFormatError(f"entry {e.display!r}: malformed sparse headers") from None
    _check_sparse(e, _sparse_pairs(numbers, e), realsize)


def _read_v1_map(e: Entry, feed: Feed) -> list[int]:
    """Format 1.0's map: decimal lines (the region count, then offset and length of each) at the
    start of the member's data, padded to a block; read a block at a time within the member."""
    blocks: list[bytes] = []
    newlines, need = 0, -1
    while need < 0 or newlines < need:
        if 512 * (len(blocks) + 1) > e.size:
            raise TarFormatError(f"entry {e.display!r}: its sparse map is larger than the member")
        block = feed.take(512)
        if len(block) < 512:
            raise TarFormatError("tar stream ends inside a sparse map")
        blocks.append(block)
        newlines += block.count(b"\n")
        if need < 0 and newlines:
            count = int(b"".join(blocks).split(b"\n", 1)[0])
            if count < 0:
                raise ValueError(count)
            need = 1 + 2 * count  # the count's line, then two per region
    e.size -= 512 * len(blocks)
    return [int(x) for x in b"".join(blocks).split(b"\n")[1:need]]


def _apply_pax(e: Entry, ext: dict[bytes, bytes]) -> None:
    for key, value in ext.items():
        if key == b"path":
            e.name = value
        elif key == b"linkpath":
            e.linkname = value
        elif key == b"size":
            e.size = _pax_int(value, key)
        elif key == b"uid":
            e.uid = _pax_int(value, key)
        elif key == b"gid":
            e.gid = _pax_int(value, key)
        elif key == b"mtime":
            e.mtime_ns = _pax_time_ns(value)
        elif key.startswith(b"SCHILY.xattr."):
            if e.xattrs is None:
                e.xattrs = {}
            e.xattrs[key[13:].decode("utf-8", "surrogateescape")] = value
        elif key.startswith(b"LIBARCHIVE.xattr."):
            if e.xattrs is None:
                e.xattrs = {}
            import base64
            import urllib.parse

            xname = urllib.parse.unquote_to_bytes(key[17:]).decode("utf-8", "surrogateescape")
            try:
                e.xattrs[xname] = base64.b64decode(value + b"=" * (-len(value) % 4))
            except ValueError:
                raise TarFormatError(f"bad LIBARCHIVE.xattr value for {xname!r}") from None
        elif key == b"SCHILY.devmajor":
            e.devmajor = _pax_int(value, key)
        elif key == b"SCHILY.devminor":
            e.devminor = _pax_int(value, key)


def _pax_int(value: bytes, key: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise TarFormatError(f"bad PAX {key.decode()} value {value!r}") from None


class LayerStream:
    """Decompress and hash a layer in a worker thread; iterate over it to get 1 MiB blocks.

    ``compressed_digest`` (optional) is checked over the raw bytes, the diff ID over the
    decompressed bytes. Both are final only after the iteration ended: call :meth:`finish`.
    """

    def __init__(self, source: BinaryIO, compression: str, *, compressed_hasher: str | None = "sha256",
                 queue_size: int = 4) -> None:
        self._source = source
        self.compression = compression
        self.compressed = Hasher(compressed_hasher) if compressed_hasher else None
        self.diff = Hasher("sha256")
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="pallet-layer-decompress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            raw: BinaryIO = _HashingReader(self._source, self.compressed) if self.compressed else self._source
            dec = comp.decompressor(raw, self.compression)
            read = dec.read
            update = self.diff.update
            while not self._stop.is_set():
                data = read(BLOCK)
                if not data:
                    break
                update(data)
                self._put(data)
            else:
                return
            # the decompressor stopped at its end of stream: hash whatever follows too
            if raw is not dec:
                while raw.read(BLOCK):
                    pass
            self._put(b"")
        except BaseException as e:  # handed to the consumer, which raises it
            if isinstance(e, Exception) and not isinstance(e, PalletError):
                # zlib/zstd errors, truncated streams, a source that failed: one clear line
                wrapped = ContentError(f"cannot read the layer stream ({self.compression}): "
                                       f"{type(e).__name__}: {e}")
                wrapped.__cause__ = e
                e = wrapped
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return
            yield item

    def finish(self) -> None:
        """Wait for the worker after the consumer saw the end (so the hashes are complete)."""
        self._thread.join()
        if not self._done:
            raise StorageError("layer stream was not read to its end")

    def close(self) -> None:
        """Stop the worker early (on error); safe to call twice."""
        self._stop.set()
        self._thread.join(timeout=30)


class _HashingReader:
    """A read(n) wrapper that hashes what passes through."""

    __slots__ = ("_h", "_src")

    def __init__(self, src: BinaryIO, hasher: Hasher) -> None:
        self._src, self._h = src, hasher

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        if data:
            self._h.update(data)
        return data

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        readinto = getattr(self._src, "readinto", None)
        if readinto is not None:
            n = readinto(b)
            if n:
                self._h.update(memoryview(b)[:n])
            return n or 0
        data = self._src.read(len(b))
        n = len(data)
        memoryview(b)[:n] = data
        if n:
            self._h.update(data)
        return n

    def readable(self) -> bool:
        return True
