"""Event-file readers against hand-built bytes and against the fixture writers."""
from __future__ import annotations

import struct

import lz4.frame
import numpy as np
import pytest
from fixtures_events import (
    AEDAT2_HEADER,
    synthetic_events,
    write_aedat2_davis346,
    write_aedat2_dvs128,
    write_aedat4,
    write_aedat31,
    write_asl_mat,
    write_atis_bin,
    write_prophesee_dat,
)

from mst_lava.data import event_io as io
from mst_lava.errors import MSTError


def assert_events(got: np.ndarray, ev: dict) -> None:
    assert len(got) == len(ev["t"])
    for f in "xytp":
        np.testing.assert_array_equal(got[f].astype(np.int64), np.asarray(ev[f]).astype(np.int64), err_msg=f)


# ------------------------------------------------------------------------------------ LZ4

def test_lz4_packet_frames():
    # AEDAT 4 packets are LZ4 frames decoded by python-lz4; several frames in one packet are
    # all decoded (lz4.frame.decompress alone would drop all but the first)
    a, b = b"hello hello hello hello hello!", bytes(range(16)) * 8
    assert io._lz4_frames("p", lz4.frame.compress(a)) == a
    assert io._lz4_frames("p", lz4.frame.compress(a) + lz4.frame.compress(b)) == a + b
    for bad in (lz4.frame.compress(b)[:-3], b"\0\0\0\0" + lz4.frame.compress(a)[4:]):
        with pytest.raises(MSTError, match="pkt.*corrupt LZ4 packet"):
            io._lz4_frames("pkt", bad)


# ---------------------------------------------------------------------------- AEDAT 1/2

def test_aedat2_dvs128_known_bytes(tmp_path):
    # jAER DVS128: bit 0 polarity, bits 1-7 x, 8-14 y (lower-left origin, x mirrored)
    recs = [((10 << 8) | (3 << 1) | 1, 100), ((127 << 8) | (0 << 1) | 0, 250)]
    path = tmp_path / "a.aedat"
    path.write_bytes(AEDAT2_HEADER + b"".join(struct.pack(">ii", a, t) for a, t in recs))
    ev = io.read_aedat2(path)
    assert ev["x"].tolist() == [124, 127] and ev["y"].tolist() == [117, 0]
    assert ev["p"].tolist() == [True, False] and ev["t"].tolist() == [100, 250]


def test_aedat1_without_version_line(tmp_path):
    # AEDAT 1.0: optional '#' comments, then big-endian int16 address + int32 timestamp
    path = tmp_path / "old.aedat"
    path.write_bytes(b"# an old jAER file\r\n" + struct.pack(">hi", (5 << 8) | (6 << 1) | 1, 42))
    ev = io.read_aedat2(path)
    assert (int(ev["x"][0]), int(ev["y"][0]), int(ev["t"][0]), bool(ev["p"][0])) == (121, 122, 42, True)


def test_aedat2_roundtrip_dvs128_and_davis(tmp_path):
    ev = synthetic_events(2, 5, 700, 128, 128, 50_000, seed=3)
    assert_events(io.read_aedat2(write_aedat2_dvs128(tmp_path / "d.aedat", ev)), ev)
    ev = synthetic_events(1, 3, 700, 346, 260, 50_000, seed=4)
    path = write_aedat2_davis346(tmp_path / "davis.aedat", ev, n_aps=7)   # APS + special skipped
    assert_events(io.read_aedat2(path), ev)
    assert io.aedat2_time_span(path) == (int(ev["t"][0]), int(ev["t"][-1]))


def test_aedat2_truncated(tmp_path):
    path = write_aedat2_dvs128(tmp_path / "t.aedat", synthetic_events(0, 2, 10, 128, 128, 1000, 0))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(MSTError, match="t.aedat.*truncated"):
        io.read_aedat2(path)


# ---------------------------------------------------------------------------- AEDAT 3.1

def test_aedat31_roundtrip_skips_special_and_invalid(tmp_path):
    ev = synthetic_events(1, 4, 300, 128, 128, 80_000, seed=5, t0=1000)
    assert_events(io.read_aedat31(write_aedat31(tmp_path / "g.aedat", ev, packet_events=50)), ev)


def test_aedat31_timestamp_overflow(tmp_path):
    head = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    data = (7 << 17) | (9 << 2) | (1 << 1) | 1
    pkt = struct.pack("<hhiiiiii", 1, 1, 8, 4, 1, 1, 1, 1) + struct.pack("<Ii", data, 5)
    path = tmp_path / "o.aedat"
    path.write_bytes(head + pkt)
    ev = io.read_aedat31(path)
    assert (int(ev["x"][0]), int(ev["y"][0]), bool(ev["p"][0])) == (7, 9, True)
    assert int(ev["t"][0]) == (1 << 31) + 5


def test_aedat31_truncated_packet(tmp_path):
    path = write_aedat31(tmp_path / "g.aedat", synthetic_events(0, 2, 40, 128, 128, 1000, 0))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(MSTError, match="g.aedat.*truncated"):
        io.read_aedat31(path)


# ----------------------------------------------------------------------------- AEDAT 4.0

@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_aedat4_roundtrip(tmp_path, compression):
    ev = synthetic_events(3, 10, 450, 128, 128, 60_000, seed=6)
    path = write_aedat4(tmp_path / "c.aedat4", ev, compression=compression, packet_events=128)
    got, size = io.read_aedat4(path, with_size=True)
    assert_events(got, ev)
    assert size == (128, 128)


def test_aedat4_without_data_table_and_empty(tmp_path):
    ev = synthetic_events(0, 1, 20, 128, 128, 1000, seed=1)
    assert_events(io.read_aedat4(write_aedat4(tmp_path / "a.aedat4", ev, data_table=False)), ev)
    empty = {f: np.zeros(0, np.int64) for f in "xytp"}
    assert len(io.read_aedat4(write_aedat4(tmp_path / "e.aedat4", empty))) == 0


def test_aedat4_corrupt(tmp_path):
    ev = synthetic_events(0, 1, 50, 128, 128, 1000, seed=1)
    path = write_aedat4(tmp_path / "bad.aedat4", ev, data_table=False)
    raw = path.read_bytes()
    path.write_bytes(raw[:-7])
    with pytest.raises(MSTError, match="bad.aedat4.*truncated"):
        io.read_aedat4(path)
    path.write_bytes(b"#!AER-DAT2.0\r\n" + raw[14:])
    with pytest.raises(MSTError, match="bad.aedat4.*not an AEDAT 4.0"):
        io.read_aedat4(path)
    lz = write_aedat4(tmp_path / "lz.aedat4", ev, compression="lz4", data_table=False)
    raw = bytearray(lz.read_bytes())
    first_packet = 14 + 4 + struct.unpack_from("<I", raw, 14)[0]
    assert raw[first_packet + 8:first_packet + 12] == b"\x04\x22\x4d\x18"   # an LZ4 frame
    raw[first_packet + 8 + 6] ^= 0x5A               # break its header checksum
    lz.write_bytes(bytes(raw))
    with pytest.raises(MSTError, match="lz.aedat4"):
        io.read_aedat4(lz)


# ---------------------------------------------------------------------------- ATIS .bin

def test_atis_bin_known_bytes(tmp_path):
    path = tmp_path / "image_0001.bin"
    path.write_bytes(bytes([5, 7, 0x80 | 0x01, 0x02, 0x03, 9, 2, 0x00, 0x10, 0x00]))
    ev = io.read_atis_bin(path)
    # events come back sorted by time: the second record (t = 0x1000) first
    assert ev["x"].tolist() == [9, 5] and ev["y"].tolist() == [2, 7]
    assert ev["t"].tolist() == [0x1000, 0x010203] and ev["p"].tolist() == [False, True]


def test_atis_bin_roundtrip_and_truncated(tmp_path):
    ev = synthetic_events(1, 3, 333, 240, 180, 300_000, seed=8)
    path = write_atis_bin(tmp_path / "x.bin", ev)
    assert_events(io.read_atis_bin(path), ev)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(MSTError, match="x.bin.*5-byte"):
        io.read_atis_bin(path)


# ------------------------------------------------------------------------ Prophesee .dat

def test_prophesee_dat_known_bytes(tmp_path):
    path = tmp_path / "obj_000001_td.dat"
    word = (1 << 28) | (33 << 14) | 101
    path.write_bytes(b"% Version 2\n% Height 100\n% Width 120\n" + bytes([0, 8]) + struct.pack("<II", 77, word))
    ev = io.read_prophesee_dat(path)
    assert (int(ev["x"][0]), int(ev["y"][0]), int(ev["t"][0]), bool(ev["p"][0])) == (101, 33, 77, True)


def test_prophesee_dat_roundtrip(tmp_path):
    ev = synthetic_events(1, 2, 400, 120, 100, 100_000, seed=9)
    assert_events(io.read_prophesee_dat(write_prophesee_dat(tmp_path / "a_td.dat", ev)), ev)
    assert_events(io.read_prophesee_dat(write_prophesee_dat(tmp_path / "b_td.dat", ev, header=False)), ev)


def test_prophesee_dat_matches_expelliarmus(tmp_path):
    # expelliarmus (tonic's C decoder) agrees on every file with a header; it is not the reader
    # because it cannot read header-less files (returns None), unwraps 32-bit timestamps,
    # prints its errors on stdout and accepts truncated files and wrong event sizes
    wizard = pytest.importorskip("expelliarmus").Wizard(encoding="dat")
    from fixtures_events import write_ncars_fixture
    paths = sorted(write_ncars_fixture(tmp_path / "ncars").rglob("*.dat"))
    ev = synthetic_events(0, 2, 200, 120, 100, 100_000, seed=10)
    paths.append(write_prophesee_dat(tmp_path / "c_td.dat", ev))
    cd = tmp_path / "cd.dat"                              # EventCd type byte, 4-bit polarity 1
    cd.write_bytes(b"% Version 2\n" + bytes([0x0C, 8]) + struct.pack("<IIII", 5, (1 << 28) | (99 << 14) | 119,
                                                                     9, (0 << 28) | (3 << 14) | 4))
    for path in paths + [cd]:
        other = wizard.read(str(path))                    # an independent DAT decoder
        assert_events(io.read_prophesee_dat(path), {f: other[f] for f in "xytp"})


def test_prophesee_dat_corrupt(tmp_path):
    path = write_prophesee_dat(tmp_path / "bad_td.dat", synthetic_events(0, 2, 10, 120, 100, 1000, 0))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(MSTError, match="bad_td.dat.*8-byte"):
        io.read_prophesee_dat(path)
    path.write_bytes(b"% Version 2\n" + bytes([0, 6]) + bytes(12))
    with pytest.raises(MSTError, match="bad_td.dat.*event size 6"):
        io.read_prophesee_dat(path)


# --------------------------------------------------------------------------- ASL-DVS .mat

@pytest.mark.parametrize("v73,compress", [(False, True), (False, False), (True, False)])
def test_asl_mat_roundtrip(tmp_path, v73, compress):
    ev = synthetic_events(2, 3, 250, 240, 180, 100_000, seed=11)
    assert_events(io.read_asl_mat(write_asl_mat(tmp_path / "a_0001.mat", ev, v73=v73, compress=compress)), ev)


def test_asl_mat_corrupt_and_missing_variable(tmp_path):
    from fixtures_events import write_mat_v5
    path = tmp_path / "bad.mat"
    path.write_bytes(b"not a mat file at all" * 3)
    with pytest.raises(MSTError, match="bad.mat"):
        io.read_asl_mat(path)
    path = write_mat_v5(tmp_path / "nopol.mat", {"x": np.zeros(3, np.uint8), "y": np.zeros(3, np.uint8),
                                                 "ts": np.zeros(3)})
    with pytest.raises(MSTError, match="nopol.mat.*pol"):
        io.read_asl_mat(path)
