"""A small LZ4 *frame* decoder in pure Python, for AEDAT 4 files written with LZ4 compression.

AEDAT 4 (iniVation DV) compresses every packet as one LZ4 frame by default. When the ``lz4``
package is installed we use it (C speed); otherwise this decoder reads the same bytes. It
follows the published LZ4 Frame Format Description (v1.6) and LZ4 Block Format Description:

frame  = magic 0x184D2204 (u32 LE) · FLG · BD · [content size u64] · [dict id u32] · HC
         · blocks · end mark (u32 0) · [content checksum u32]
FLG    = version (bits 7-6, must be 01) · block independence (5) · block checksum (4)
         · content size (3) · content checksum (2) · reserved (1) · dict id (0)
HC     = (xxh32(FLG..last descriptor byte, seed 0) >> 8) & 0xFF
block  = size u32 (bit 31 set: stored uncompressed) · data · [block checksum u32]
sequence (block data) = token (literal length << 4 | match length - 4) · [length bytes]
         · literals · offset u16 LE · [length bytes]; the last sequence has literals only.

Skippable frames (magic 0x184D2A50..5F) are skipped. Checksums other than the header's are
not verified (a corrupt block almost always breaks the sequence structure, which is checked).
"""
from __future__ import annotations

import struct

MAGIC = 0x184D2204
_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
_M = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M


def xxh32(data: bytes, seed: int = 0) -> int:
    """xxHash32 of ``data`` (used for the LZ4 frame header checksum; fine for short inputs)."""
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M]
        while i <= n - 16:
            for k in range(4):
                lane = struct.unpack_from("<I", data, i)[0]
                v[k] = (_rotl((v[k] + lane * _P2) & _M, 13) * _P1) & _M
                i += 4
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 4 <= n:
        h = (_rotl((h + struct.unpack_from("<I", data, i)[0] * _P3) & _M, 17) * _P4) & _M
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * _P5) & _M, 11) * _P1) & _M
        i += 1
    h ^= h >> 15
    h = (h * _P2) & _M
    h ^= h >> 13
    h = (h * _P3) & _M
    h ^= h >> 16
    return h


def _read_length(src: bytes, i: int, n: int) -> tuple[int, int]:
    total = 0
    while True:
        b = src[i]
        i += 1
        total += b
        if b != 255:
            return total, i


def decode_block(src: bytes, out: bytearray, window_start: int = 0) -> None:
    """Append the decoded LZ4 block ``src`` to ``out``; matches may reach back to ``window_start``."""
    i, n = 0, len(src)
    try:
        while True:
            token = src[i]
            i += 1
            lit = token >> 4
            if lit == 15:
                extra, i = _read_length(src, i, n)
                lit += extra
            if i + lit > n:
                raise ValueError("literals run past the end of the block")
            out += src[i:i + lit]
            i += lit
            if i >= n:           # last sequence: literals only
                return
            off = src[i] | (src[i + 1] << 8)
            i += 2
            if off == 0 or off > len(out) - window_start:
                raise ValueError(f"match offset {off} outside the window")
            ml = token & 15
            if ml == 15:
                extra, i = _read_length(src, i, n)
                ml += extra
            ml += 4
            start = len(out) - off
            if off >= ml:
                out += out[start:start + ml]
            else:                 # overlapping copy: repeat the last `off` bytes
                chunk = bytes(out[start:])
                out += (chunk * (ml // off + 1))[:ml]
    except IndexError:
        raise ValueError("LZ4 block is truncated") from None


def decompress(buf: bytes) -> bytes:
    """Decode one or more concatenated LZ4 frames. Raises ValueError on malformed input."""
    out = bytearray()
    pos, n = 0, len(buf)
    while pos < n:
        if pos + 4 > n:
            raise ValueError("truncated LZ4 frame magic")
        magic = struct.unpack_from("<I", buf, pos)[0]
        if 0x184D2A50 <= magic <= 0x184D2A5F:          # skippable frame
            if pos + 8 > n:
                raise ValueError("truncated skippable frame")
            pos += 8 + struct.unpack_from("<I", buf, pos + 4)[0]
            continue
        if magic != MAGIC:
            raise ValueError(f"bad LZ4 frame magic 0x{magic:08X}")
        if pos + 7 > n:
            raise ValueError("truncated LZ4 frame header")
        flg = buf[pos + 4]
        if flg >> 6 != 1:
            raise ValueError(f"unsupported LZ4 frame version {flg >> 6}")
        p = pos + 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0)
        if p >= n:
            raise ValueError("truncated LZ4 frame header")
        if buf[p] != (xxh32(bytes(buf[pos + 4:p])) >> 8) & 0xFF:
            raise ValueError("LZ4 frame header checksum mismatch")
        p += 1
        frame_start = len(out)
        independent = bool(flg & 0x20)
        while True:
            if p + 4 > n:
                raise ValueError("truncated LZ4 block header")
            size = struct.unpack_from("<I", buf, p)[0]
            p += 4
            if size == 0:
                break
            stored = size & 0x80000000
            size &= 0x7FFFFFFF
            if p + size > n:
                raise ValueError("truncated LZ4 block")
            block = bytes(buf[p:p + size])
            p += size
            if stored:
                out += block
            else:
                decode_block(block, out, len(out) if independent else frame_start)
            if flg & 0x10:
                p += 4
        if flg & 0x04:
            p += 4
        if p > n:
            raise ValueError("truncated LZ4 frame checksum")
        pos = p
    return bytes(out)


def lz4_decompress(buf: bytes) -> bytes:
    """LZ4 frame decompression: the ``lz4`` package when installed, this module otherwise."""
    try:
        import lz4.frame as _lz4f
    except ImportError:
        return decompress(buf)
    return _lz4f.decompress(buf)
