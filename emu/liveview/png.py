"""A PNG encoder in a few lines: truecolour pixels, zlib-compressed, in checksummed chunks.

A PNG file (PNG specification, 2nd edition, W3C/ISO 15948; RFC 2083) is an 8-byte signature,
then chunks: 4-byte big-endian length, 4-byte type, data, and a CRC-32 of type and data (§5.3).
Three chunks make a minimal image (§11.2):
- IHDR: width, height, bit depth 8, colour type 2 (truecolour: R, G, B per pixel), compression
  method 0 (zlib deflate), filter method 0, interlace method 0 (none);
- IDAT: the image data, one zlib stream (RFC 1950) of every scanline in turn, each preceded by
  its filter type byte (§9.2); type 0, "None", stores the row as it is (the other four predict a
  byte from its neighbours, which compresses photographs better: a plot of flat colour hardly
  needs it);
- IEND: empty, the end.
zlib.crc32 is the CRC that §5.5 specifies (ISO 3309 / ITU-T V.42, polynomial 0x04C11DB7).
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"  # §5.2: high bit, "PNG", CR LF, Ctrl-Z, LF: catches bad transfers
COLOUR_TYPE_RGB, BIT_DEPTH = 2, 8


def chunk(kind: bytes, data: bytes) -> bytes:
    """One chunk: length, type, data, CRC-32 over type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
    """`rgb`: height rows of width pixels, 3 bytes each (R, G, B), top row first."""
    stride = width * 3
    if width <= 0 or height <= 0 or len(rgb) != stride * height:
        raise ValueError(f"{len(rgb)} bytes of pixels for a {width}x{height} RGB image")
    header = struct.pack(">IIBBBBB", width, height, BIT_DEPTH, COLOUR_TYPE_RGB, 0, 0, 0)
    scanlines = b"".join(b"\x00" + bytes(rgb[y * stride : (y + 1) * stride]) for y in range(height))
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b"")
