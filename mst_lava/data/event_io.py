"""Readers for event-camera file formats, each from the format's published byte layout.

Every reader returns a numpy structured array with tonic's event dtype
(``tonic.io.events_struct``: fields ``x, y`` int16, ``t`` int64 µs, ``p`` bool, 1 = ON),
sorted by ``t``, in *image* coordinates: ``(x, y) = (column, row)``, origin top-left.
Formats whose origin is the sensor's lower left (jAER's AEDAT 1.0/2.0, ASL-DVS) are flipped.
A malformed file raises :class:`mst_lava.errors.MSTError` naming the file.

=================  ===========================================================  ============
reader             format                                                       datasets
=================  ===========================================================  ============
read_aedat2        AEDAT 1.0/2.0 (jAER): '#' header, big-endian [addr, ts]      CIFAR10-DVS
                   pairs; DVS128 or DAVIS346 address layout                     (original),
                                                                                Action Rec.
read_aedat31       AEDAT 3.1 (cAER): header, typed little-endian packets        DVS128
                                                                                Gesture
read_aedat4        AEDAT 4.0 (DV): IOHeader + FlatBuffer packets, optional      CIFAR10-DVS
                   LZ4/Zstd compression                                          (tonic)
read_atis_bin      N-MNIST/N-Caltech101 ATIS .bin: 40-bit events (tonic.io)     N-Caltech101
read_prophesee_dat Prophesee/ATIS .dat: '% ' header, type/size bytes, 64-bit    N-Cars
                   [ts, x|y|p] words
read_asl_mat       MATLAB .mat (v5 via scipy, v7.3 via h5py) with x, y, ts, pol  ASL-DVS
=================  ===========================================================  ============
"""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from tonic.io import events_struct, make_structured_array

from mst_lava.errors import MSTError

EVENT_DTYPE = events_struct


def _fail(path, what: str) -> MSTError:
    return MSTError(f"{path}: {what}")


def _regular(path) -> Path:
    """``path`` as a Path, refused (not opened) unless it is a regular file: a FIFO would block the read."""
    from mst_lava.fileio import check_input_file
    return check_input_file(path, "event file")


def make_events(x, y, t, p, sensor_size=None) -> np.ndarray:
    """Build a sorted tonic event array; drop events outside ``sensor_size=(W, H)`` if given."""
    x = np.asarray(x).astype(np.int64).ravel()
    y = np.asarray(y).astype(np.int64).ravel()
    t = np.asarray(t).astype(np.int64).ravel()
    p = np.asarray(p).ravel() != 0
    if not (len(x) == len(y) == len(t) == len(p)):
        raise ValueError("x, y, t, p differ in length")
    if sensor_size is not None:
        W, H = sensor_size
        keep = (x >= 0) & (x < W) & (y >= 0) & (y < H)
        if not keep.all():
            x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    ev = make_structured_array(x.astype(np.int16), y.astype(np.int16), t, p, dtype=EVENT_DTYPE)
    if len(ev) > 1 and np.any(np.diff(t) < 0):
        ev = ev[np.argsort(t, kind="stable")]
    return ev


# --------------------------------------------------------------------------- AEDAT 1.0 / 2.0

def _is_text_line(line: bytes) -> bool:
    body = line.rstrip(b"\r\n")
    return line.endswith(b"\n") and not any(b < 9 or 13 < b < 32 for b in body)


def read_aedat_header(path) -> tuple[float, int, list[str]]:
    """Parse the '#' header lines of an AEDAT file: (version, byte offset of data, lines).

    The version comes from the ``#!AER-DATx.y`` line (1.0 when absent, per the spec). A line
    counts as header only if it is text up to its newline, so binary data that happens to
    start with '#' is not swallowed.
    """
    version, lines = 1.0, []
    with open(_regular(path), "rb") as f:
        offset = 0
        while True:
            line = f.readline(1 << 20)
            if not line.startswith(b"#") or not _is_text_line(line):
                break
            text = line.decode("latin-1").rstrip("\r\n")
            if text.startswith("#!AER-DAT"):
                try:
                    version = float(text[len("#!AER-DAT"):])
                except ValueError:
                    raise _fail(path, f"unreadable AEDAT version line {text!r}") from None
            lines.append(text)
            offset += len(line)
            if text.startswith("#!END-HEADER"):
                break
    return version, offset, lines


def aedat2_records(path) -> tuple[np.ndarray, list[str]]:
    """The raw [address, timestamp] records of an AEDAT 1.0/2.0 file as a read-only memmap."""
    path = Path(path)
    version, start, lines = read_aedat_header(path)
    if version >= 3:
        raise _fail(path, f"is AEDAT {version}, expected AEDAT 1.0/2.0 (jAER)")
    rec = np.dtype([("a", ">u2" if version < 2 else ">u4"), ("t", ">i4")])
    size = path.stat().st_size - start
    if size % rec.itemsize:
        raise _fail(path, f"truncated or corrupt AEDAT {version:.1f} data: {size} bytes after "
                          f"the header is not a whole number of {rec.itemsize}-byte events")
    if size == 0:
        return np.zeros(0, rec), lines
    return np.memmap(path, dtype=rec, mode="r", offset=start), lines


def detect_chip(lines: list[str], default: str) -> str:
    """'dvs128' or 'davis346' from the AEChip header line; ``default`` when it says nothing."""
    for line in lines:
        if "AEChip" in line:
            low = line.lower()
            if "davis" in low:
                return "davis346"
            if "dvs128" in low or "tmpdiff128" in low:
                return "dvs128"
    return default


def decode_aedat2(rec: np.ndarray, chip: str) -> np.ndarray:
    """Decode jAER addresses (records ``a``, ``t``) to image-coordinate events.

    DVS128 (16/32-bit address): bit 0 polarity (1 = ON), bits 1-7 x, bits 8-14 y, bit 15
    external event. DAVIS346 (32-bit): bit 31 APS/IMU sample, bit 10 special/trigger (both
    clear for a DVS event), bit 11 polarity, bits 12-21 x, bits 22-30 y. jAER stores x
    mirrored and y from the lower left; both are flipped here to image coordinates.
    """
    a = np.asarray(rec["a"]).astype(np.int64)
    t = np.asarray(rec["t"]).astype(np.int64)
    if chip == "dvs128":
        keep = (a & 0x8000) == 0
        a, t = a[keep], t[keep]
        x = 127 - ((a >> 1) & 0x7F)
        y = 127 - ((a >> 8) & 0x7F)
        return make_events(x, y, t, a & 1, (128, 128))
    if chip == "davis346":
        keep = (a & 0x80000000) == 0
        keep &= (a & 0x400) == 0
        a, t = a[keep], t[keep]
        x = 345 - ((a >> 12) & 0x3FF)
        y = 259 - ((a >> 22) & 0x1FF)
        return make_events(x, y, t, (a >> 11) & 1, (346, 260))
    raise ValueError(f"unknown chip {chip!r}")


def read_aedat2(path, chip: str | None = None, default_chip: str = "dvs128") -> np.ndarray:
    """Events of a jAER AEDAT 1.0/2.0 file (``chip`` from the AEChip header unless given)."""
    rec, lines = aedat2_records(path)
    return decode_aedat2(rec, chip or detect_chip(lines, default_chip))


def aedat2_time_span(path) -> tuple[int, int]:
    """(first, last) timestamp of an AEDAT 1.0/2.0 file without reading it all."""
    rec, _ = aedat2_records(path)
    if len(rec) == 0:
        raise _fail(path, "holds no events")
    return int(rec["t"][0]), int(rec["t"][-1])


# --------------------------------------------------------------------------------- AEDAT 3.1

_PKT_HDR = struct.Struct("<hhiiiiii")   # type, source, size, tsOffset, tsOverflow, capacity, number, valid


def read_aedat31(path) -> np.ndarray:
    """Polarity events of an AEDAT 3.0/3.1 file (e.g. DVS128 Gesture).

    After the header (ended by ``#!END-HEADER``) come packets: a 28-byte little-endian header
    (int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
    int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid) and
    ``eventCapacity × eventSize`` bytes of events. Polarity events (type 1, 8 bytes): uint32
    data (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x) and int32 timestamp; the full
    timestamp is ``eventTSOverflow << 31 | timestamp``. Other packet types and invalid events
    are skipped. AEDAT 3.1's origin is the upper left, as in images.
    """
    path = Path(path)
    version, start, _ = read_aedat_header(path)
    if not 3 <= version < 4:
        raise _fail(path, f"is AEDAT {version}, expected AEDAT 3.x")
    data = path.read_bytes()
    pos, n = start, len(data)
    xs, ys, ts, ps = [], [], [], []
    pol = np.dtype([("d", "<u4"), ("t", "<i4")])
    while pos < n:
        if pos + 28 > n:
            raise _fail(path, f"truncated AEDAT 3 packet header at byte {pos}")
        etype, _src, esize, _tsoff, tsover, cap, num, _valid = _PKT_HDR.unpack_from(data, pos)
        pos += 28
        if esize <= 0 or cap < 0 or num < 0 or num > cap:
            raise _fail(path, f"corrupt AEDAT 3 packet header at byte {pos - 28}")
        body = cap * esize
        if pos + body > n:
            raise _fail(path, f"truncated AEDAT 3 packet at byte {pos - 28}")
        if etype == 1:
            if esize != 8:
                raise _fail(path, f"polarity events of {esize} bytes, expected 8")
            ev = np.frombuffer(data, dtype=pol, count=num, offset=pos)
            d = ev["d"].astype(np.int64)
            ok = (d & 1) == 1
            d = d[ok]
            xs.append((d >> 17) & 0x7FFF)
            ys.append((d >> 2) & 0x7FFF)
            ps.append((d >> 1) & 1)
            ts.append((np.int64(tsover) << 31) | ev["t"][ok].astype(np.int64))
        pos += body
    if not ts:
        return make_events([], [], [], [])
    return make_events(np.concatenate(xs), np.concatenate(ys), np.concatenate(ts), np.concatenate(ps))


# ---------------------------------------------------------------------------------- AEDAT 4.0

AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"
_COMPRESSION = {0: "none", 1: "lz4", 2: "lz4-high", 3: "zstd", 4: "zstd-high"}


class _FlatTable:
    """Bounds-checked reader of one FlatBuffers table (little-endian) inside ``buf``."""

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.pos = pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        vt_size = struct.unpack_from("<H", buf, vt)[0]
        self.offsets = [struct.unpack_from("<H", buf, vt + 4 + 2 * i)[0] for i in range((vt_size - 4) // 2)]

    def field(self, i: int) -> int | None:
        off = self.offsets[i] if i < len(self.offsets) else 0
        return self.pos + off if off else None

    def scalar(self, i: int, fmt: str, default):
        at = self.field(i)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def indirect(self, i: int) -> int | None:
        at = self.field(i)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]


def _parse_ioheader(path, buf: bytes) -> tuple[int, int, str]:
    try:
        table = _FlatTable(buf, struct.unpack_from("<I", buf, 0)[0])
        compression = table.scalar(0, "i", 0)
        data_table = table.scalar(1, "q", -1)
        s = table.indirect(2)
        info = ""
        if s is not None:
            length = struct.unpack_from("<I", buf, s)[0]
            if s + 4 + length > len(buf):
                raise ValueError
            info = buf[s + 4:s + 4 + length].decode("utf-8", "replace")
    except (struct.error, ValueError, IndexError):
        raise _fail(path, "corrupt AEDAT 4 IOHeader") from None
    return compression, data_table, info


def _event_streams(info: str) -> dict[int, tuple[int, int]]:
    """{stream id: (sizeX, sizeY)} for the EVTS streams named in the IOHeader's XML."""
    streams = {}
    try:
        root = ET.fromstring(info)
    except ET.ParseError:
        return streams
    for out in root.iter("node"):
        if out.get("name") != "outInfo":
            continue
        for node in out.findall("node"):
            attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
            if attrs.get("typeIdentifier") != "EVTS":
                continue
            size = [0, 0]
            for sub in node.findall("node"):
                if sub.get("name") == "info":
                    sa = {a.get("key"): (a.text or "") for a in sub.findall("attr")}
                    size = [int(sa.get("sizeX", 0) or 0), int(sa.get("sizeY", 0) or 0)]
            try:
                streams[int(node.get("name"))] = (size[0], size[1])
            except (TypeError, ValueError):
                continue
    return streams


def _decompress(path, body: bytes, compression: int) -> bytes:
    kind = _COMPRESSION.get(compression)
    if kind is None:
        raise _fail(path, f"unknown AEDAT 4 compression code {compression}")
    if kind == "none":
        return body
    if kind.startswith("lz4"):
        return _lz4_frames(path, body)
    try:
        import zstandard
    except ImportError:
        raise _fail(path, "is Zstd-compressed; install the 'zstandard' package "
                          "(pip install zstandard) to read it") from None
    try:
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    except zstandard.ZstdError as e:
        raise _fail(path, f"corrupt Zstd packet ({e})") from None


def _lz4_frames(path, body: bytes) -> bytes:
    """Every LZ4 frame of one packet (DV writes one; python-lz4 decodes one at a time)."""
    try:
        import lz4.frame
    except ImportError:
        raise _fail(path, "is LZ4-compressed; install the 'lz4' package (pip install lz4) "
                          "to read it") from None
    out, pos = [], 0
    try:
        while pos < len(body):
            data, used = lz4.frame.decompress(body[pos:], return_bytes_read=True)
            if used <= 0:
                raise RuntimeError("no progress")
            out.append(data)
            pos += used
    except RuntimeError as e:       # python-lz4 reports every malformed frame as RuntimeError
        raise _fail(path, f"corrupt LZ4 packet ({e})") from None
    return b"".join(out)


_EV4 = np.dtype({"names": ["t", "x", "y", "on"], "formats": ["<i8", "<i2", "<i2", "u1"],
                 "offsets": [0, 8, 10, 12], "itemsize": 16})


def _packet_events(path, buf: bytes) -> np.ndarray | None:
    """Events of one decompressed, size-prefixed ``EventPacket`` FlatBuffer; None if not EVTS."""
    if len(buf) < 12:
        raise _fail(path, "corrupt AEDAT 4 packet (too short)")
    if buf[8:12] != b"EVTS":
        return None
    try:
        body = memoryview(buf)[4:]
        table = _FlatTable(body, struct.unpack_from("<I", body, 0)[0])
        vec = table.indirect(0)
        if vec is None:
            return np.zeros(0, _EV4)
        count = struct.unpack_from("<I", body, vec)[0]
        if vec + 4 + 16 * count > len(body):
            raise ValueError
        return np.frombuffer(body, dtype=_EV4, count=count, offset=vec + 4)
    except (struct.error, ValueError, IndexError):
        raise _fail(path, "corrupt AEDAT 4 event packet") from None


def read_aedat4(path, with_size: bool = False):
    """Events of an AEDAT 4.0 file (iniVation DV; tonic's re-encoded CIFAR10-DVS).

    Layout: ``#!AER-DAT4.0\\r\\n``, a little-endian u32 length and that many bytes of
    ``IOHeader`` FlatBuffer (compression, dataTablePosition, infoNode XML naming each stream
    and its sizeX/sizeY), then packets: int32 stream id, int32 byte size, and the (possibly
    LZ4/Zstd-compressed) size-prefixed FlatBuffer with identifier ``EVTS`` whose vector holds
    16-byte ``Event`` structs (int64 t µs, int16 x, int16 y, bool on, 3 bytes padding). Reading
    stops at ``dataTablePosition`` (the packet index DV appends) when it is set. Only the first
    event stream is read; frames, IMU and trigger packets are skipped. With ``with_size``,
    returns ``(events, (sizeX, sizeY) or None)``.
    """
    path = _regular(path)
    data = path.read_bytes()
    if not data.startswith(AEDAT4_MAGIC):
        raise _fail(path, "is not an AEDAT 4.0 file (missing '#!AER-DAT4.0' magic line)")
    pos = len(AEDAT4_MAGIC)
    if pos + 4 > len(data):
        raise _fail(path, "truncated AEDAT 4 header")
    hlen = struct.unpack_from("<I", data, pos)[0]
    pos += 4
    if pos + hlen > len(data):
        raise _fail(path, "truncated AEDAT 4 IOHeader")
    compression, data_table, info = _parse_ioheader(path, data[pos:pos + hlen])
    pos += hlen
    streams = _event_streams(info)
    target = min(streams) if streams else None
    end = data_table if 0 <= data_table <= len(data) else len(data)
    chunks = []
    while pos < end:
        if pos + 8 > end:
            raise _fail(path, f"truncated AEDAT 4 packet header at byte {pos}")
        sid, size = struct.unpack_from("<ii", data, pos)
        pos += 8
        if size < 0 or pos + size > end:
            raise _fail(path, f"truncated or corrupt AEDAT 4 packet at byte {pos - 8}")
        body = data[pos:pos + size]
        pos += size
        if target is not None and sid != target:
            continue
        ev = _packet_events(path, _decompress(path, body, compression))
        if ev is not None:
            chunks.append(ev)
    ev = np.concatenate(chunks) if chunks else np.zeros(0, _EV4)
    size = streams.get(target) if target is not None else None
    events = make_events(ev["x"], ev["y"], ev["t"], ev["on"])
    return (events, size if size and all(size) else None) if with_size else events


# ----------------------------------------------------------------------------- ATIS .bin

def read_atis_bin(path) -> np.ndarray:
    """Events of an N-MNIST/N-Caltech101 ``.bin`` file (Orchard et al. 2015).

    Each event is 40 bits, big-endian: bits 39-32 x, 31-24 y, 23 polarity (1 = ON), 22-0
    timestamp (µs). Events with y = 240 are timestamp-overflow markers. Decoding is tonic's
    ``tonic.io.read_mnist_file``; this wrapper validates the file first.
    """
    from tonic.io import read_mnist_file
    path = _regular(path)
    size = path.stat().st_size
    if size % 5:
        raise _fail(path, f"truncated or corrupt ATIS .bin file: {size} bytes is not a whole "
                          "number of 5-byte events")
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    ev = read_mnist_file(str(path), dtype=dtype)
    return make_events(ev["x"], ev["y"], ev["t"], ev["p"])


# ------------------------------------------------------------------------ Prophesee .dat

def read_prophesee_dat(path, sensor_size=None) -> np.ndarray:
    """Events of a Prophesee/ATIS ``.dat`` file (N-Cars ``*_td.dat``).

    Text header lines ``% key value\\n``; when a header is present, two bytes follow: event
    type (0x00 Event2d/TD, 0x0C EventCd) and event size (8). Then little-endian 64-bit
    events: uint32 timestamp (µs) and uint32 with x in bits 0-13, y in bits 14-27 and
    polarity in bits 28-31.
    """
    path = _regular(path)
    data = path.read_bytes()
    pos, n_header = 0, 0
    while data.startswith(b"% ", pos) or data.startswith(b"%\n", pos):
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise _fail(path, "truncated .dat header (no newline)")
        pos, n_header = nl + 1, n_header + 1
    if n_header:
        if pos + 2 > len(data):
            raise _fail(path, "truncated .dat file: no event type/size bytes after the header")
        ev_type, ev_size = data[pos], data[pos + 1]
        pos += 2
        if ev_size != 8:
            raise _fail(path, f"event size {ev_size} in the .dat header, expected 8")
        if ev_type not in (0x00, 0x0C):
            raise _fail(path, f"event type 0x{ev_type:02X} is not a TD/CD event type")
    rest = len(data) - pos
    if rest % 8:
        raise _fail(path, f"truncated or corrupt .dat data: {rest} bytes is not a whole number "
                          "of 8-byte events")
    words = np.frombuffer(data, dtype=np.dtype([("t", "<u4"), ("d", "<u4")]), offset=pos)
    d = words["d"].astype(np.int64)
    return make_events(d & 0x3FFF, (d >> 14) & 0x3FFF, words["t"], (d >> 28) & 0xF, sensor_size)


# ------------------------------------------------------------------------------ ASL-DVS .mat

def read_asl_mat(path, height: int = 180) -> np.ndarray:
    """Events of an ASL-DVS ``.mat`` file: variables ``x``, ``y``, ``ts`` (µs), ``pol``.

    MATLAB v5 files are read with ``scipy.io.loadmat``, v7.3 (HDF5) with h5py. As in tonic,
    ``y`` counts from the bottom and is flipped: ``row = height - 1 - y``.
    """
    path = _regular(path)
    try:
        import scipy.io as sio
        try:
            mat = sio.loadmat(str(path), variable_names=["x", "y", "ts", "pol"])
        except NotImplementedError:          # v7.3 = HDF5
            import h5py
            with h5py.File(path, "r") as f:
                mat = {k: np.array(f[k]) for k in ("x", "y", "ts", "pol") if k in f}
    except MSTError:
        raise
    except Exception as e:  # scipy raises several types (ValueError, TypeError, MatReadError...)
        raise _fail(path, f"unreadable MATLAB file ({type(e).__name__}: {e})") from None
    missing = [k for k in ("x", "y", "ts", "pol") if k not in mat]
    if missing:
        raise _fail(path, f"missing variable(s) {', '.join(missing)}; expected x, y, ts, pol")
    x, y, ts, pol = (np.asarray(mat[k]).ravel() for k in ("x", "y", "ts", "pol"))
    if not (len(x) == len(y) == len(ts) == len(pol)):
        raise _fail(path, "variables x, y, ts, pol differ in length")
    return make_events(x, height - 1 - y.astype(np.int64), ts, pol, (240, height))
