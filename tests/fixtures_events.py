"""Writers of tiny event-camera files in each dataset's real byte format, and of complete tiny
dataset folders in the layouts ``mst_lava.data.events`` expects.

Byte layouts follow each format's own documentation (iniVation's AEDAT 1.0/2.0/3.1/4.0 pages
and the FlatBuffers schemas of DV's IOHeader/EventPacket; Orchard's N-MNIST/N-Caltech101 .bin
description; Prophesee's DAT format page; the DvsGesture README). Nothing here calls the
readers under test, so a reader and a writer that disagree with the documentation cannot agree
by construction. Compression and MATLAB files come from the libraries themselves: LZ4 frames
from python-lz4 (``lz4.frame.compress``), MAT v5 files from ``scipy.io.savemat``.

Import from a test (pytest puts ``tests/`` on ``sys.path``) or from anywhere with
``sys.path.insert(0, "<repo>/tests")``::

    from fixtures_events import write_cifar10dvs_fixture, write_ncars_fixture
    root = write_cifar10dvs_fixture(tmp_path / "c10dvs", n_per_class=2)

Every dataset writer returns the folder to pass as ``--data`` and draws class-dependent
events (a blob whose position depends on the label), so a model can learn them.
"""
from __future__ import annotations

import struct
from pathlib import Path

import lz4.frame
import numpy as np

# --------------------------------------------------------------------------- synthetic events


def synthetic_events(label: int, n_classes: int, n: int, width: int, height: int,
                     duration_us: int, seed: int, t0: int = 0) -> dict:
    """``n`` events (dict of x, y, t, p arrays, sorted by t) around a label-dependent point."""
    rng = np.random.RandomState(seed)
    a = 2 * np.pi * label / max(1, n_classes)
    cx, cy = width / 2 + 0.3 * width * np.cos(a), height / 2 + 0.3 * height * np.sin(a)
    x = np.clip(np.round(cx + rng.normal(0, 0.08 * width, n)), 0, width - 1).astype(np.int64)
    y = np.clip(np.round(cy + rng.normal(0, 0.08 * height, n)), 0, height - 1).astype(np.int64)
    t = t0 + np.sort(rng.randint(0, duration_us, n)).astype(np.int64)
    p = rng.randint(0, 2, n).astype(np.int64)
    return {"x": x, "y": y, "t": t, "p": p}


def _mkparent(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------- AEDAT 1.0 / 2.0

AEDAT2_HEADER = (
    b"#!AER-DAT2.0\r\n"
    b"# This is a raw AE data file - do not edit\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n"
    b"# created Mon Jan 01 00:00:00 CET 2018\r\n"
)


def write_aedat2_dvs128(path, ev: dict, chip_line: bool = True) -> Path:
    """jAER AEDAT 2.0, DVS128: address bit 0 polarity, 1-7 x, 8-14 y; big-endian int32 pairs.

    ``ev`` is in image coordinates; jAER stores x mirrored and y from the lower left.
    """
    path = _mkparent(path)
    rawx = 127 - np.asarray(ev["x"], np.int64)
    rawy = 127 - np.asarray(ev["y"], np.int64)
    addr = (rawy << 8) | (rawx << 1) | np.asarray(ev["p"], np.int64)
    rec = np.zeros(len(addr), dtype=[("a", ">i4"), ("t", ">i4")])
    rec["a"], rec["t"] = addr, ev["t"]
    head = AEDAT2_HEADER + (b"# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n" if chip_line else b"")
    path.write_bytes(head + rec.tobytes())
    return path


def write_aedat2_davis346(path, ev: dict, n_aps: int = 5) -> Path:
    """jAER AEDAT 2.0, DAVIS346: bit 31 APS/IMU, bit 10 special, bit 11 polarity, 12-21 x, 22-30 y.

    ``n_aps`` APS samples (bit 31 set) and one special event (bit 10) are interleaved; a reader
    must skip them.
    """
    path = _mkparent(path)
    rawx = 345 - np.asarray(ev["x"], np.int64)
    rawy = 259 - np.asarray(ev["y"], np.int64)
    addr = (rawy << 22) | (rawx << 12) | (np.asarray(ev["p"], np.int64) << 11)
    t = np.asarray(ev["t"], np.int64)
    extra_a, extra_t = [], []
    if len(t):
        for k in range(n_aps):
            extra_a.append((1 << 31) | (k << 12) | 0x3FF)
            extra_t.append(int(t[min(len(t) - 1, k * max(1, len(t) // max(1, n_aps)))]))
        extra_a.append((17 << 12) | (1 << 10))          # special/trigger event
        extra_t.append(int(t[len(t) // 2]))
    a_all = np.concatenate([addr, np.array(extra_a, np.int64)])
    t_all = np.concatenate([t, np.array(extra_t, np.int64)])
    order = np.argsort(t_all, kind="stable")
    rec = np.zeros(len(a_all), dtype=[("a", ">u4"), ("t", ">i4")])
    rec["a"], rec["t"] = a_all[order], t_all[order]
    head = AEDAT2_HEADER + b"# AEChip: eu.seebetter.ini.chips.davis.DAVIS346B\r\n"
    path.write_bytes(head + rec.tobytes())
    return path


# ------------------------------------------------------------------------------ AEDAT 3.1

def _aedat3_packet(etype: int, data: bytes, size: int, number: int, ts_overflow: int = 0) -> bytes:
    # eventType, eventSource, eventSize, eventTSOffset, eventTSOverflow, eventCapacity,
    # eventNumber, eventValid
    return struct.pack("<hhiiiiii", etype, 1, size, 4, ts_overflow, number, number, number) + data


def write_aedat31(path, ev: dict, packet_events: int = 64, invalid: bool = True,
                  special: bool = True) -> Path:
    """cAER AEDAT 3.1 with polarity packets (type 1): uint32 data (bit 0 valid, 1 polarity,
    2-16 y, 17-31 x) + int32 timestamp, little-endian; plus a special-event packet (type 0)
    and, with ``invalid``, one extra event whose valid bit is clear.
    """
    path = _mkparent(path)
    head = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
            b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n")
    x, y = np.asarray(ev["x"], np.int64), np.asarray(ev["y"], np.int64)
    p, t = np.asarray(ev["p"], np.int64), np.asarray(ev["t"], np.int64)
    data = (x << 17) | (y << 2) | (p << 1) | 1
    body = bytearray()
    if special:
        sp = np.zeros(2, dtype=[("d", "<u4"), ("t", "<i4")])
        sp["d"], sp["t"] = [(2 << 1) | 1, (5 << 1) | 1], [0, int(t[0]) if len(t) else 0]
        body += _aedat3_packet(0, sp.tobytes(), 8, 2)
    for s in range(0, len(t), packet_events):
        d, tt = data[s:s + packet_events], t[s:s + packet_events]
        if invalid and s == 0 and len(d):
            d = np.concatenate([d, [(3 << 17) | (3 << 2)]])      # valid bit 0: dropped
            tt = np.concatenate([tt, [tt[-1]]])
        rec = np.zeros(len(d), dtype=[("d", "<u4"), ("t", "<i4")])
        rec["d"], rec["t"] = d & 0xFFFFFFFF, tt & 0x7FFFFFFF
        body += _aedat3_packet(1, rec.tobytes(), 8, len(d), int(tt[0] >> 31) if len(tt) else 0)
    path.write_bytes(head + bytes(body))
    return path


# ------------------------------------------------------------------------------ AEDAT 4.0

def _fb_ioheader(compression: int, data_table: int, info: str) -> bytes:
    """FlatBuffer ``IOHeader {compression:int32; dataTablePosition:int64; infoNode:string}``."""
    s = info.encode()
    buf = bytearray(struct.pack("<I", 24) + b"IOHE")          # root table at 24, identifier
    buf += struct.pack("<HHHHH", 10, 20, 4, 8, 16) + b"\0" * 6  # vtable at 8
    buf += struct.pack("<i", 24 - 8)                          # table at 24 → vtable at 8
    buf += struct.pack("<iq", compression, data_table)        # fields at +4, +8
    buf += struct.pack("<I", 44 - 40)                         # string offset at 40 → 44
    buf += struct.pack("<I", len(s)) + s + b"\0"
    buf += b"\0" * (-len(buf) % 4)
    return bytes(buf)


def _fb_event_packet(ev: dict) -> bytes:
    """Size-prefixed FlatBuffer ``EventPacket {elements:[Event]}``, identifier ``EVTS``;
    ``Event`` = int64 t, int16 x, int16 y, bool on, 3 bytes padding (16 bytes)."""
    n = len(ev["t"])
    rec = np.zeros(n, dtype=np.dtype({"names": ["t", "x", "y", "on"],
                                      "formats": ["<i8", "<i2", "<i2", "u1"],
                                      "offsets": [0, 8, 10, 12], "itemsize": 16}))
    rec["t"], rec["x"], rec["y"], rec["on"] = ev["t"], ev["x"], ev["y"], ev["p"]
    body = bytearray(struct.pack("<I", 16) + b"EVTS")         # root table at 16
    body += struct.pack("<HHH", 6, 8, 4) + b"\0\0"            # vtable at 8
    body += struct.pack("<iI", 16 - 8, 28 - 20) + b"\0" * 4   # table at 16; vector at 28
    body += struct.pack("<I", n) + rec.tobytes()
    return struct.pack("<I", len(body)) + bytes(body)


def _aedat4_info(width: int, height: int) -> str:
    return (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="originalOutputName" type="string">events</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
        f'<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
        '<attr key="source" type="string">DVS128</attr></node></node>'
        '<node name="1" path="/mainloop/Recorder/outInfo/1/">'
        '<attr key="typeIdentifier" type="string">FRME</attr></node>'
        '</node></dv>')


def write_aedat4(path, ev: dict, width: int = 128, height: int = 128, compression: str = "none",
                 packet_events: int = 100, data_table: bool = True, frame_packet: bool = True) -> Path:
    """DV AEDAT 4.0: magic line, u32 IOHeader length, IOHeader, packets (int32 stream id,
    int32 size, packet bytes, one LZ4 frame (python-lz4) when ``compression='lz4'``), then a
    stand-in data table at ``dataTablePosition`` that a reader must not parse as packets."""
    path = _mkparent(path)
    code = {"none": 0, "lz4": 1}[compression]
    pack = lz4.frame.compress if code else (lambda b: b)
    packets = bytearray()
    n = len(ev["t"])
    for k, s in enumerate(range(0, max(n, 1), packet_events)):
        chunk = {f: np.asarray(ev[f])[s:s + packet_events] for f in ("x", "y", "t", "p")}
        body = pack(_fb_event_packet(chunk))
        packets += struct.pack("<ii", 0, len(body)) + body
        if frame_packet and k == 0:        # a frame-stream packet (stream 1) to be skipped
            fr = b"\x10\0\0\0" + b"\x08\0\0\0FRME" + b"\0" * 8
            fr = pack(fr)
            packets += struct.pack("<ii", 1, len(fr)) + fr
    magic = b"#!AER-DAT4.0\r\n"
    info = _aedat4_info(width, height)
    header_len = len(_fb_ioheader(code, 0, info))
    start = len(magic) + 4 + header_len
    table_pos = start + len(packets) if data_table else -1
    header = _fb_ioheader(code, table_pos, info)
    assert len(header) == header_len
    tail = (b"\x0c\0\0\0" + b"FTAB" + b"\xff" * 24) if data_table else b""
    path.write_bytes(magic + struct.pack("<I", len(header)) + header + bytes(packets) + tail)
    return path


# ------------------------------------------------------------------------------ ATIS .bin

def write_atis_bin(path, ev: dict) -> Path:
    """N-MNIST / N-Caltech101: 40 bits per event — x (8), y (8), polarity (1), timestamp (23)."""
    path = _mkparent(path)
    x, y = np.asarray(ev["x"], np.int64), np.asarray(ev["y"], np.int64)
    p, t = np.asarray(ev["p"], np.int64), np.asarray(ev["t"], np.int64)
    assert t.max(initial=0) < (1 << 23)
    b = np.zeros((len(t), 5), np.uint8)
    b[:, 0], b[:, 1] = x, y
    b[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    b[:, 3], b[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    path.write_bytes(b.tobytes())
    return path


# ------------------------------------------------------------------------- Prophesee .dat

def write_prophesee_dat(path, ev: dict, width: int = 120, height: int = 100,
                        header: bool = True) -> Path:
    """Prophesee DAT: '% key value' lines, event type (0x00 TD) and size (8) bytes, then
    little-endian [uint32 ts, uint32 (p << 28 | y << 14 | x)] words."""
    path = _mkparent(path)
    x, y = np.asarray(ev["x"], np.int64), np.asarray(ev["y"], np.int64)
    rec = np.zeros(len(x), dtype=[("t", "<u4"), ("d", "<u4")])
    rec["t"] = ev["t"]
    rec["d"] = (np.asarray(ev["p"], np.int64) << 28) | (y << 14) | x
    head = b""
    if header:
        head = (b"% Data file containing Temporal Difference events\n% Version 2\n"
                b"% Date 2017-01-01 00:00:00\n" + f"% Height {height}\n% Width {width}\n".encode()
                + bytes([0x00, 0x08]))
    path.write_bytes(head + rec.tobytes())
    return path


# --------------------------------------------------------------------------- MATLAB .mat

def write_mat_v5(path, variables: dict, compress: bool = True) -> Path:
    """MATLAB Level 5 MAT-file written by ``scipy.io.savemat``; 1-D arrays as column vectors,
    zlib-compressed (miCOMPRESSED) elements unless ``compress`` is false."""
    import scipy.io
    path = _mkparent(path)
    scipy.io.savemat(path, variables, do_compression=compress, oned_as="column")
    return path


def write_mat_v73(path, variables: dict) -> Path:
    """MATLAB v7.3 MAT-file: HDF5 with a 512-byte user block holding the MAT header."""
    import h5py
    path = _mkparent(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, a in variables.items():
            f.create_dataset(name, data=np.asarray(a).reshape(1, -1))   # MATLAB stores transposed
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(text.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0200) + b"IM")
    return path


def write_asl_mat(path, ev: dict, height: int = 180, v73: bool = False, compress: bool = True) -> Path:
    """An ASL-DVS sample: x, y (counted from the bottom), ts, pol as MATLAB column vectors."""
    variables = {
        "ts": np.asarray(ev["t"], np.float64),
        "x": np.asarray(ev["x"], np.uint8),
        "y": (height - 1 - np.asarray(ev["y"], np.int64)).astype(np.uint8),
        "pol": np.asarray(ev["p"], np.uint8),
    }
    return write_mat_v73(path, variables) if v73 else write_mat_v5(path, variables, compress)


# ----------------------------------------------------------------------- dataset folders

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def write_cifar10dvs_fixture(root, n_per_class: int = 2, fmt: str = "aedat4",
                             n_events: int = 400, compression: str = "none") -> Path:
    """``root/<class>/cifar10_<class>_<i>.aedat4`` (tonic's archive) or ``.aedat`` (original)."""
    root = Path(root)
    for label, c in enumerate(CIFAR10_CLASSES):
        for i in range(n_per_class):
            ev = synthetic_events(label, 10, n_events, 128, 128, 200_000, seed=1000 * label + i)
            if fmt == "aedat4":
                write_aedat4(root / c / f"cifar10_{c}_{i}.aedat4", ev, compression=compression)
            elif fmt == "aedat":
                write_aedat2_dvs128(root / c / f"cifar10_{c}_{i}.aedat", ev)
            else:
                raise ValueError(fmt)
    return root


def write_ncaltech101_fixture(root, classes=("accordion", "airplanes", "anchor"),
                              n_per_class: int = 3, n_events: int = 300) -> Path:
    """``root/Caltech101/<class>/image_XXXX.bin`` (plus an annotations folder to be ignored)."""
    root = Path(root)
    for label, c in enumerate(classes):
        for i in range(n_per_class):
            ev = synthetic_events(label, len(classes), n_events, 240, 180, 300_000, seed=77 + 31 * label + i)
            write_atis_bin(root / "Caltech101" / c / f"image_{i + 1:04d}.bin", ev)
    (root / "Caltech101_annotations" / classes[0]).mkdir(parents=True, exist_ok=True)
    (root / "Caltech101_annotations" / classes[0] / "annotation_0001.bin").write_bytes(b"\0" * 10)
    return root


def write_ncars_fixture(root, n_per_class: int = 2, n_events: int = 300) -> Path:
    """``root/n-cars_{train,test}/{background,cars}/obj_XXXXXX_td.dat``."""
    root = Path(root)
    k = 0
    for split, n in (("train", n_per_class), ("test", max(1, n_per_class // 2 or 1))):
        for label, c in enumerate(("background", "cars")):
            for _ in range(n):
                ev = synthetic_events(label, 2, n_events, 120, 100, 100_000, seed=500 + k)
                write_prophesee_dat(root / f"n-cars_{split}" / c / f"obj_{k:06d}_td.dat", ev)
                k += 1
    return root


def write_asl_dvs_fixture(root, letters=("a", "b", "c"), n_per_class: int = 3,
                          n_events: int = 300) -> Path:
    """``root/Yin/<letter>/<letter>_XXXX.mat`` (MATLAB v5)."""
    root = Path(root)
    for label, c in enumerate(letters):
        for i in range(n_per_class):
            ev = synthetic_events(label, len(letters), n_events, 240, 180, 100_000, seed=900 + 7 * label + i)
            write_asl_mat(root / "Yin" / c / f"{c}_{i + 1:04d}.mat", ev)
    return root


def write_dvs_gesture_fixture(root, n_classes: int = 3, segment_us: int = 200_000,
                              n_events: int = 200) -> Path:
    """``root/DvsGesture/`` with two recordings (one train, one test), label CSVs and the trial lists."""
    root = Path(root) / "DvsGesture"
    root.mkdir(parents=True, exist_ok=True)
    for u, user in enumerate(("user01_fluorescent", "user02_led")):
        xs, rows = [], []
        for c in range(n_classes):
            t0 = 1_000_000 + c * (segment_us + 50_000)
            ev = synthetic_events(c, n_classes, n_events, 128, 128, segment_us, seed=40 + 10 * u + c, t0=t0)
            xs.append(ev)
            rows.append(f"{c + 1},{t0},{t0 + segment_us}")
        ev = {f: np.concatenate([e[f] for e in xs]) for f in ("x", "y", "t", "p")}
        write_aedat31(root / f"{user}.aedat", ev)
        (root / f"{user}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + "\n".join(rows) + "\n")
    (root / "trials_to_train.txt").write_text("user01_fluorescent.aedat\n")
    (root / "trials_to_test.txt").write_text("user02_led.aedat\n")
    return root.parent


def write_action_recognition_fixture(root, classes=("arm-crossing", "jumping", "waving"),
                                     n_recordings: int = 2, duration_us: int = 700_000,
                                     n_events: int = 600) -> Path:
    """``root/<action>/<i>.aedat`` DAVIS346 jAER recordings (with APS samples interleaved)."""
    root = Path(root)
    for label, c in enumerate(classes):
        for i in range(n_recordings):
            ev = synthetic_events(label, len(classes), n_events, 346, 260, duration_us,
                                  seed=300 + 13 * label + i, t0=5_000_000)
            write_aedat2_davis346(root / c / f"{i + 1}.aedat", ev)
    return root
