"""The unified BGE-M3 loss with self-knowledge distillation (arXiv:2402.03216 §3.3 Eqs. (1)-(4); spec §3.3-3.4).

With raw (un-tempered) scores and tau the temperature, every term below works on scores / tau:

    s_inter = w_d s_dense + w_s s_lex + w_c s_mul                                    Eq. (2), w = (1, 0.3, 1)
    L       = (l_d L_dense + l_i L_inter + l_s L_lex + l_c L_mul) / n_L                l = (1, 1, 0.1, 1), n_L = 4
    L'      = (l'_d L'_dense + l'_s L'_lex + l'_c L'_mul) / n_L'                       Eq. (4), l' = (1, 0.1, 1), n_L' = 3
    L_final = (L + L') / n_f                                                         n_f = 2

where each L_x is InfoNCE (Eq. (1)) or, with teacher scores, the chosen teacher-distillation loss, and each
L'_x is the self-distillation CE against the detached softmax of s_inter (Eq. (3)). The defaults are the
reference code's numbers (spec §0: numerical parity); :meth:`M3LossWeights.paper_v2` gives the unweighted
variant of the paper's v2 text. Any subset of the heads may be trained (a stage's head set): one head gives
its loss alone (L_dense alone is stage 1).

Training a subset of the heads. Restricted to a subset H (a stage that trains some heads only; for H = all
three every formula below is the one above, and the numbers are bit for bit those of the full loss):

* |H| = 1: L_final = L_x alone (Eq. (1), unweighted: l_x only balances heads against each other), no
  s_inter and no self-distillation (``self_distill`` is ignored), as the reference's dense-only stage 1.
* |H| >= 2, ensemble (Eq. (2)): s_inter = sum_{x in H} w_x c_H s_x with c_H = (w_d + w_s + w_c) /
  sum_{x in H} w_x, i.e. the chosen heads keep their relative weights and the ensemble keeps the full
  case's total weight (2.3 with the reference's (1, 0.3, 1)), hence its sharpness under tau.
  Dense + sparse: (1, 0.3) * 2.3 / 1.3.
* |H| >= 2, normalisers: n_L and n_L' are read as averages over the terms present, scaled by the number
  of terms: L = (l_d L_dense + l_i L_inter + l_s L_lex + l_c L_mul, terms of H only) / (n_L (|H| + 1) / 4),
  L' = (sum_{x in H} l'_x L'_x) / (n_L' |H| / 3) (Eq. (3)-(4), teacher softmax(s_inter of H / tau)),
  L_final = (L + L') / n_f (n_f unchanged: both L and L' are present).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import torch

from m3lit.losses.distill import KD_LOSSES, teacher_distribution
from m3lit.losses.infonce import check_score_matrix, check_temperature, info_nce, own_group_scores
from m3lit.losses.self_distill import self_distill_loss
from m3lit.scores import fused_scores

__all__ = ["HEADS", "M3LossWeights", "M3LossOutput", "m3_loss"]

#: The three heads in the order of m3_loss's arguments (and of every sum below).
HEADS = ("dense", "sparse", "colbert")


@dataclass(frozen=True)
class M3LossWeights:
    """Every weight of the unified loss; defaults reproduce FlagEmbedding's code exactly."""

    dense: float = 1.0  # l_d: weight of L_dense in L
    inter: float = 1.0  # l_i: weight of L_inter (InfoNCE on the ensemble score) in L
    sparse: float = 0.1  # l_s: weight of L_lex in L (the reference damps the lexical loss)
    colbert: float = 1.0  # l_c: weight of L_mul in L
    ensemble_dense: float = 1.0  # w_d: s_dense's weight in s_inter (Eq. (2))
    ensemble_sparse: float = 0.3  # w_s: s_lex's weight in s_inter (code 0.3; paper v2 text 1)
    ensemble_colbert: float = 1.0  # w_c: s_mul's weight in s_inter
    distill_dense: float = 1.0  # l'_d: weight of L'_dense in L'
    distill_sparse: float = 0.1  # l'_s: weight of L'_lex in L'
    distill_colbert: float = 1.0  # l'_c: weight of L'_mul in L'
    unified_norm: float = 4.0  # n_L: L is divided by it (the reference averages its 4 terms)
    distill_norm: float = 3.0  # n_L': L' is divided by it (Eq. (4) averages 3 terms)
    final_norm: float = 2.0  # n_f: L_final = (L + L') / n_f when self-distillation is on

    @classmethod
    def paper_v2(cls) -> M3LossWeights:
        """The unweighted variant as the paper's v2 text reads (spec §3.4): s_inter = s_dense + s_lex + s_mul,
        L = L_dense + L_inter + L_lex + L_mul (no /4), L' = (L'_dense + L'_lex + L'_mul) / 3, L_final = L + L'."""
        return cls(sparse=1.0, ensemble_sparse=1.0, distill_sparse=1.0, unified_norm=1.0, final_norm=1.0)

    @classmethod
    def coerce(cls, value: M3LossWeights | Mapping | str | None) -> M3LossWeights:
        """Weights from None (defaults), a preset name (``reference``/``paper_v2``), a mapping of overrides
        (e.g. a Hydra config; a ``preset`` key picks the base) or an instance."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if isinstance(value, str):
            presets = {"reference": cls, "paper_v2": cls.paper_v2}
            if value not in presets:
                raise ValueError(f"unknown loss-weight preset {value!r}; choose one of {sorted(presets)}")
            return presets[value]()
        if isinstance(value, Mapping):
            overrides = dict(value)
            base = cls.coerce(overrides.pop("preset", None))
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ValueError(f"unknown loss weight(s) {unknown}; valid names: {sorted(known)}")
            return replace(base, **{k: float(v) for k, v in overrides.items()})
        raise TypeError(
            f"loss weights must be M3LossWeights, a mapping, a preset name or None, not {type(value)}"
        )

    def __post_init__(self) -> None:
        for name in ("unified_norm", "distill_norm", "final_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class M3LossOutput:
    """``loss``: the scalar to back-propagate; ``parts``: detached, unweighted scalars for logging, keyed
    ``dense``, ``sparse``, ``colbert``, ``inter`` and ``self_distill`` (L', weighted as in Eq. (4)), only
    those computed."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]


def m3_loss(
    dense: torch.Tensor | None,
    sparse: torch.Tensor | None,
    colbert: torch.Tensor | None,
    group_size: int,
    *,
    temperature: float = 0.02,
    self_distill: bool = True,
    teacher_scores: torch.Tensor | None = None,
    kd_loss: str = "m3_kd_loss",
    query_offset: int = 0,
    in_batch_negatives: bool = True,
    weights: M3LossWeights | Mapping | str | None = None,
) -> M3LossOutput:
    """BGE-M3's training loss on raw score matrices, over any non-empty subset H of the three heads.

    Restricted to a subset H of the heads as the module docstring's "Training a subset of the heads" says.

    Args:
        dense: (B, Q*G) raw dense scores; local (Q = B) or cross-device gathered (Q = W*B, see
            ``query_offset``), or None when the dense head is not trained. As in the reference, by default only
            the dense loss uses gathered columns.
        sparse: (B, B*G) raw lexical scores of the local batch, or None (head not trained). A matrix gathered
            across devices like ``dense`` is accepted too (its own loss then uses the gathered columns; s_inter
            and self-distillation still use the local block). Without ``dense``, a width other than B*G means
            gathered.
        colbert: (B, B*G) raw multi-vector scores, local or gathered like ``sparse``, or None.
        group_size: G, passages per query laid out [pos, neg_1..neg_{G-1}].
        temperature: tau, applied to all three scores and to s_inter (0.02 in BGE-M3).
        self_distill: add L' (Eq. (3)-(4)) and return (L + L') / n_f; ignored with a single head, which has no
            ensemble teacher.
        teacher_scores: (B, G) external teacher scores aligned with the passages, or None; integers are cast.
            When given, every L_x uses ``kd_loss`` with softmax(teacher_scores) as the target.
        kd_loss: ``m3_kd_loss`` (listwise, the BGE-M3 recipe) or ``kl_div`` (see :mod:`m3lit.losses.distill`).
        query_offset: rank * B when a matrix is gathered across W devices, else 0. s_inter and the
            self-distillation use the local block, columns [query_offset*G, (query_offset + B)*G).
        in_batch_negatives: False scores every query against its own group only, target 0 (spec §3.1, §3.6).
        weights: :class:`M3LossWeights`, a mapping of overrides, ``"reference"`` or ``"paper_v2"``.

    Returns:
        :class:`M3LossOutput` with the scalar loss (float32) and its parts.

    >>> d = torch.tensor([[0.9, 0.1, 0.2, 0.0], [0.3, 0.2, 0.8, 0.1]])   # B = 2 queries, G = 2
    >>> out = m3_loss(d, None, None, 2, temperature=1.0)   # dense-only: mean of -log softmax(row)[target]
    >>> sorted(out.parts), round(out.loss.item(), 4)
    (['dense'], 0.9154)
    >>> out = m3_loss(d, d.abs(), d, 2, temperature=1.0)                   # unified + self-distillation
    >>> sorted(out.parts)
    ['colbert', 'dense', 'inter', 'self_distill', 'sparse']
    >>> sorted(m3_loss(None, d.abs(), d, 2, temperature=1.0).parts)        # sparse + ColBERT only
    ['colbert', 'inter', 'self_distill', 'sparse']

    Raises:
        ValueError: no score matrix at all, shapes that do not fit (group size not dividing the passages,
            matrices of different query counts, sparse/ColBERT neither the local (B, B*G) block nor shaped like
            ``dense``, teacher scores not (B, G)), unknown ``kd_loss``, non-positive temperature.
    """
    check_temperature(temperature)
    w = M3LossWeights.coerce(weights)
    if kd_loss not in KD_LOSSES:
        raise ValueError(f"unknown kd_loss {kd_loss!r}; choose one of {sorted(KD_LOSSES)}")
    heads = _score_heads(dense, sparse, colbert, group_size, query_offset)
    n_queries = next(iter(heads.values()))[0].shape[0]
    teacher = None if teacher_scores is None else teacher_distribution(teacher_scores, n_queries, group_size)
    head_loss = functools.partial(
        _head_loss,
        group_size=group_size,
        teacher=teacher,
        kd_loss=kd_loss,
        temperature=temperature,
        in_batch_negatives=in_batch_negatives,
    )
    if len(heads) == 1:  # one head: its own loss alone (stage 1 for dense)
        ((name, (scores, offset, _)),) = heads.items()
        part = head_loss(scores, offset)
        return M3LossOutput(part, _detached({name: part}))
    loss, parts, ensemble = _unified_loss(heads, head_loss, w)
    if self_distill:
        parts["self_distill"] = _self_distillation(
            heads, ensemble, w, temperature, group_size, in_batch_negatives
        )
        loss = (loss + parts["self_distill"]) / w.final_norm
    return M3LossOutput(loss, _detached(parts))


def _head_loss(
    scores: torch.Tensor,
    offset: int,
    *,
    group_size: int,
    teacher: torch.Tensor | None,
    kd_loss: str,
    temperature: float,
    in_batch_negatives: bool,
) -> torch.Tensor:
    """L_x of one score matrix: InfoNCE (Eq. (1)), or ``kd_loss`` against the teacher distribution."""
    options = {"temperature": temperature, "query_offset": offset, "in_batch_negatives": in_batch_negatives}
    if teacher is None:
        return info_nce(scores, group_size, **options)
    return KD_LOSSES[kd_loss](scores, teacher, group_size, **options)


def _unified_loss(
    heads: dict[str, tuple[torch.Tensor, int, torch.Tensor]],
    head_loss: Callable[[torch.Tensor, int], torch.Tensor],
    w: M3LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """L (two or more heads): ``(L, {head: L_x, "inter": L_inter}, s_inter)`` (Eq. (2) and the l-weighted sum)."""
    ensemble_w = {"dense": w.ensemble_dense, "sparse": w.ensemble_sparse, "colbert": w.ensemble_colbert}
    scale = sum(ensemble_w.values()) / sum(ensemble_w[k] for k in heads)  # c_H, exactly 1.0 for all three
    ensemble = fused_scores(
        *(heads[k][2] if k in heads else None for k in HEADS),
        weights=tuple(ensemble_w[k] * scale for k in HEADS),
    )  # s_inter, Eq. (2), on the local block; tempering is linear, so (sum of raw) / tau = sum of tempered
    parts = {name: head_loss(scores, offset) for name, (scores, offset, _) in heads.items()}
    parts["inter"] = head_loss(ensemble, 0)
    lam = {"dense": w.dense, "inter": w.inter, "sparse": w.sparse, "colbert": w.colbert}
    terms = [lam[k] * parts[k] for k in ("dense", "inter", "sparse", "colbert") if k in parts]
    loss = functools.reduce(operator.add, terms) / (w.unified_norm * ((len(heads) + 1) / 4))
    return loss, parts, ensemble


def _score_heads(
    dense: torch.Tensor | None,
    sparse: torch.Tensor | None,
    colbert: torch.Tensor | None,
    group_size: int,
    query_offset: int,
) -> dict[str, tuple[torch.Tensor, int, torch.Tensor]]:
    """The given heads, checked: name -> (score matrix, its query offset, its local (B, B*G) block).

    Raises:
        ValueError: as :func:`m3_loss` lists for shapes.
    """
    given = {name: s for name, s in zip(HEADS, (dense, sparse, colbert), strict=True) if s is not None}
    if not given:
        raise ValueError("m3_loss: no score matrix given; pass at least one of dense, sparse, colbert")
    n_queries = next(iter(given.values())).shape[0]
    columns = slice(query_offset * group_size, (query_offset + n_queries) * group_size)
    heads = {}
    for name, scores in given.items():
        local = scores.dim() == 2 and scores.shape[1] == n_queries * group_size
        if name == "dense":
            pass  # dense is always read at query_offset (0 for a local matrix)
        elif dense is not None and scores.shape not in (dense.shape, (n_queries, n_queries * group_size)):
            raise ValueError(
                f"{name} scores must be the local (B, B*G) = {(n_queries, n_queries * group_size)} matrix or "
                f"gathered like dense {tuple(dense.shape)}, got {tuple(scores.shape)}"
            )
        offset = 0 if local and name != "dense" else query_offset
        check_score_matrix(name, scores, group_size, offset)
        if scores.shape[0] != n_queries:
            raise ValueError(
                f"{name} scores have {scores.shape[0]} query rows, {list(given)[0]} has {n_queries}"
            )
        heads[name] = (scores, offset, scores if local else scores[:, columns])
    return heads


def _self_distillation(
    heads: dict[str, tuple[torch.Tensor, int, torch.Tensor]],
    ensemble: torch.Tensor,
    w: M3LossWeights,
    temperature: float,
    group_size: int,
    in_batch_negatives: bool,
) -> torch.Tensor:
    """L' (Eq. (3)-(4)): each head's local block against the detached softmax of s_inter, weighted by l'_x
    and divided by n_L' |H| / 3."""
    students = {name: local for name, (_, _, local) in heads.items()}
    if not in_batch_negatives:  # teacher and students over each query's own group only
        students = {k: own_group_scores(v, group_size) for k, v in students.items()}
        ensemble = own_group_scores(ensemble, group_size)
    lam = {"dense": w.distill_dense, "sparse": w.distill_sparse, "colbert": w.distill_colbert}
    return sum(
        lam[k] * self_distill_loss(v, ensemble, temperature=temperature) for k, v in students.items()
    ) / (w.distill_norm * (len(heads) / 3))


def _detached(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in parts.items()}
