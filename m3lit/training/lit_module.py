"""``M3LitModule``: the Lightning system that trains an :class:`~m3lit.model.M3Model` on :class:`M3Batch` es.

BGE-M3, arXiv:2402.03216 §3.3 (losses, via :func:`~m3lit.training.objective.m3_objective`), App. B.1
(stages, switched by :class:`~m3lit.callbacks.stage_switch.StageSwitch` through :attr:`M3LitModule.stage`)
and App. B.3 (split-batch). Optimisation is manual in every mode, so the split-batch step, the exact
gradient cache and the plain step share one code path: zero grads, backward(s), clip, AdamW step,
scheduler step (one scheduler step per optimizer step).

Every step runs under its own RNG seed derived from (seed, rank, global step): dropout at step k does not
depend on anything that happened before, so a run resumed from a checkpoint replays the uninterrupted
run bit for bit (CPU, deterministic mode). The global RNG states are checkpointed too and restored at
the first batch after a resume, for anything else that draws from them.

A model built from a plain encoder (no ``sparse_linear.pt``/``colbert_linear.pt``) starts with
``model.heads_loaded`` False; the first optimizer step of a stage that trains the sparse and ColBERT heads
sets it True, so from then on retrieval evaluation during training (``RetrievalMetrics``) and after it
reports every mode. A stage without both (stage 1, or any head subset lacking one) leaves it as it is.

A stage trains any subset of the heads (:mod:`m3lit.training.stages`): only the chosen heads are computed,
so an unchosen head's parameters get no gradient (``.grad`` stays None: zero_grad sets it to None) and
AdamW skips parameters without a gradient entirely (no moment update, no weight decay); they stay bit for
bit as loaded and are exported so.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, is_dataclass
from functools import partial
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_warn

from m3lit.data.batch import Encoded, M3Batch
from m3lit.model import M3Model
from m3lit.model.training_checkpoint import CKPT_META_KEY, checkpoint_metadata
from m3lit.training.embedding_grad import row_wise_embedding_grad, zero_grad_keeping
from m3lit.training.gradcache import gradcache_step, split_batch_step
from m3lit.training.objective import check_finite, m3_objective
from m3lit.training.optim import (
    OptimizerConfig,
    SchedulerConfig,
    build_optimizer,
    from_mapping,
    lr_lambda,
    param_groups,
    warmup_steps_for,
)
from m3lit.training.stages import HEADS, stage_name, stage_spec

__all__ = ["M3LitModule", "SUB_BATCH_MODES", "clamp_log_interval", "split_encoded"]

#: ``split``: paper App. B.3 (sub-batches with graph, one backward; turn on gradient checkpointing for
#: the memory saving). ``gradcache``: exact gradient cache (constant activation memory).
SUB_BATCH_MODES = ("split", "gradcache")


def split_encoded(subs: Sequence[Encoded], size: int | None) -> list[Encoded]:
    """Re-chunk sub-batches into at most ``size`` rows each, trimming all-padding columns (right padding)."""
    if size is None:
        return list(subs)
    if size < 1:
        raise ValueError(f"sub_batch_size must be >= 1 or null, got {size}")
    chunks = []
    for sub in subs:
        for start in range(0, len(sub), size):
            ids, mask = sub.input_ids[start : start + size], sub.attention_mask[start : start + size]
            length = max(1, int(mask.sum(-1).max()))
            chunks.append(Encoded(ids[:, :length], mask[:, :length]))
    return chunks


class M3LitModule(L.LightningModule):
    """Trains an M3Model with the BGE-M3 losses.

    Args:
        net: the model (built by :func:`m3lit.training.build.build_m3_model`).
        stage: initial loss mode: a preset ``dense`` | ``unified`` | ``unified_self_distill``, or any head set
            ``{heads: [dense, sparse, colbert], self_distill: bool}`` (:mod:`m3lit.training.stages`;
            StageSwitch changes it).
        loss: keyword arguments of :func:`m3lit.losses.m3_loss` (temperature, weights, kd_loss, ...).
        optimizer: ``lr``, ``weight_decay``, ``betas``, ``eps`` for AdamW (decay/no-decay groups).
        scheduler: ``name`` (linear|cosine|constant), ``warmup_steps`` or ``warmup_ratio``, ``total_steps``
            (None: the trainer's estimated stepping batches, i.e. ``max_steps``).
        sub_batch_mode: ``split`` or ``gradcache`` (see :data:`SUB_BATCH_MODES`).
        sub_batch_size: re-chunk the collator's sub-batches to this many rows (None: keep them).
        negatives_cross_device: score queries against the passages of every rank (spec §3.1).
        cross_device_heads: heads whose passages are gathered; ``[dense]`` is the reference.
        max_grad_norm: clip the global gradient norm (None or 0: off). HF Trainer default 1.0.
        seed: base of the per-step dropout seed (:meth:`step_seed`).
    """

    def __init__(
        self,
        net: M3Model,
        *,
        stage: str | Mapping[str, Any] = "unified_self_distill",
        loss: Mapping[str, Any] | None = None,
        optimizer: OptimizerConfig | Mapping[str, Any] | None = None,
        scheduler: SchedulerConfig | Mapping[str, Any] | None = None,
        sub_batch_mode: Literal["split", "gradcache"] = "split",
        sub_batch_size: int | None = None,
        negatives_cross_device: bool = False,
        cross_device_heads: Sequence[Literal["dense", "sparse", "colbert"]] = ("dense",),
        max_grad_norm: float | None = 1.0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if sub_batch_mode not in SUB_BATCH_MODES:
            raise ValueError(f"sub_batch_mode must be one of {SUB_BATCH_MODES}, got {sub_batch_mode!r}")
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = False
        self.model = net
        self.stage = stage
        self.loss_kwargs = dict(loss or {})
        self.optimizer_cfg: OptimizerConfig = from_mapping(OptimizerConfig, optimizer, "model.optimizer")
        self.scheduler_cfg: SchedulerConfig = from_mapping(SchedulerConfig, scheduler, "model.scheduler")
        # Checkpoints are read with weights_only=True: keep the hyper-parameters plain data.
        self.hparams["optimizer"] = asdict(self.optimizer_cfg)
        self.hparams["scheduler"] = asdict(self.scheduler_cfg)
        self.hparams["loss"] = {k: asdict(v) if is_dataclass(v) else v for k, v in self.loss_kwargs.items()}
        self.hparams["cross_device_heads"] = list(cross_device_heads)
        self.sub_batch_mode = sub_batch_mode
        self.sub_batch_size = sub_batch_size
        self.negatives_cross_device = negatives_cross_device
        self.cross_device_heads = tuple(cross_device_heads)
        self.max_grad_norm = max_grad_norm
        self.seed = seed
        self._pending_rng: dict | None = None
        self._step_started = 0.0
        #: index of the active entry of the stage schedule (StageSwitch sets it; 0 without a schedule),
        #: logged as ``train/stage``.
        self.stage_index = 0
        self._parts_logged: set[str] = set()  # loss parts logged so far by this process (see _log_step)

    # ------------------------------------------------------------------ stage
    @property
    def stage(self) -> str:
        """Current loss mode: the canonical stage name (a preset name or e.g. ``dense+sparse``)."""
        return self._stage

    @stage.setter
    def stage(self, value: str | Mapping[str, Any]) -> None:
        self._stage = stage_name(value)  # validates

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **heads: bool):
        """Inference: the M3Model's outputs (see :class:`~m3lit.model.M3Output`)."""
        return self.model(input_ids, attention_mask, **heads)

    # ------------------------------------------------------------------ training
    def step_seed(self) -> int:
        """Seed of this step's dropout: a function of (seed, rank, global step) only."""
        return (self.seed * 1_000_003 + self.global_rank * 7_919 + self.global_step) % (2**63 - 1)

    @contextmanager
    def _step_rng(self):
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.step_seed())
            yield

    def _objective(self, q, p, *, batch: M3Batch):
        out = m3_objective(
            q,
            p,
            group_size=batch.group_size,
            stage=stage_spec(self.stage),
            loss_kwargs=self.loss_kwargs,
            teacher_scores=batch.teacher_scores,
            in_batch_negatives=not batch.no_in_batch_neg,
            negatives_cross_device=self.negatives_cross_device,
            cross_device_heads=self.cross_device_heads,
            pad_token_id=self.model.tokenizer.pad_token_id,
        )
        finite = all(bool(torch.isfinite(v.detach()).all()) for v in (out.loss, *out.parts.values()))
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            check_finite(out.loss, out.parts, self.global_step)  # names the parts (this rank's view)
            raise FloatingPointError(f"non-finite loss on another rank at global step {self.global_step}")
        return out

    def compute_step(self, batch: M3Batch, backward=None, no_sync=None):
        """Encode, score, compute the loss and back-propagate it into ``.grad`` (no optimizer step).

        Returns the ``M3LossOutput``. ``backward`` defaults to ``manual_backward``; ``no_sync`` to the
        strategy's ``block_backward_sync`` (DDP: only the last backward of the gradient cache syncs).
        """
        spec = stage_spec(self.stage)
        heads = {
            "dense": spec.dense,
            "sparse": spec.sparse,
            "colbert": spec.colbert,
        }  # only these are computed
        queries = split_encoded(batch.queries, self.sub_batch_size)
        passages = split_encoded(batch.passages, self.sub_batch_size)
        kwargs = dict(
            heads=heads,
            loss_fn=partial(self._objective, batch=batch),
            backward=backward or self.manual_backward,
            pad_token_id=self.model.tokenizer.pad_token_id,
        )
        if self.sub_batch_mode == "gradcache":
            # Only DDP-like strategies have block_backward_sync; a single device has nothing to sync.
            sync = no_sync or getattr(self.trainer.strategy, "block_backward_sync", nullcontext)
            return gradcache_step(self.model, queries, passages, no_sync=sync, **kwargs)
        return split_batch_step(self.model, queries, passages, **kwargs)

    def on_fit_start(self) -> None:
        clamp_log_interval(self.trainer)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        self._step_started = time.perf_counter()

    def training_step(self, batch: M3Batch, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        embedding = self._row_wise_embedding()
        zero_grad_keeping(opt, None if embedding is None else embedding.weight)
        with self._step_rng(), row_wise_embedding_grad(embedding):
            out = self.compute_step(batch)
        if self.max_grad_norm:
            self._clip_gradients(opt)
        opt.step()
        self.lr_schedulers().step()
        spec = stage_spec(self.stage)
        if spec.sparse and spec.colbert:
            self.model.heads_loaded = True  # trained from here on (module docstring)
        self._log_step(batch, out)
        return out.loss.detach()

    def _row_wise_embedding(self) -> torch.nn.Module | None:
        """The input embedding whose gradient is accumulated row-wise (:mod:`m3lit.training.embedding_grad`):
        on single-process CPU runs only; None elsewhere (DDP/FSDP gradient hooks, CUDA atomics)."""
        if self.device.type != "cpu" or not isinstance(self.trainer.strategy, SingleDeviceStrategy):
            return None
        return self.model.encoder.get_input_embeddings()

    def _clip_gradients(self, optimizer) -> None:
        """Clip the global gradient norm to ``max_grad_norm``.

        FSDP shards gradients, so its root module clips. Without loss scaling (fp32, bf16) the gradients are
        final after backward (DDP has already averaged them), so they are clipped here directly, which also
        keeps the fused AdamW usable under bf16-mixed (Lightning's mixed-precision plugin refuses to clip an
        optimizer that could unscale gradients itself). Under fp16 loss scaling (and DeepSpeed) Lightning
        clips, after unscaling.
        """
        wrapped = getattr(self.trainer.strategy, "model", None)
        if type(wrapped).__name__ == "FullyShardedDataParallel" and hasattr(wrapped, "clip_grad_norm_"):
            wrapped.clip_grad_norm_(self.max_grad_norm)
            return
        if not _loss_scaled(self.trainer) and "deepspeed" not in type(self.trainer.strategy).__name__.lower():
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            return
        self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")

    def _log_step(self, batch: M3Batch, out) -> None:
        n_q = batch.num_queries
        log = partial(self.log, on_step=True, on_epoch=False, batch_size=n_q)
        log("train/loss", out.loss.detach(), prog_bar=True)
        for name, value in out.parts.items():
            log(f"train/loss/{name}", value.detach())
        # Lightning re-sends a key's last value at every step until the epoch ends, so a part that an earlier
        # stage logged and this stage does not compute is overwritten with NaN instead of repeating.
        for name in sorted(self._parts_logged - set(out.parts)):
            log(f"train/loss/{name}", float("nan"))
        self._parts_logged |= set(out.parts)
        spec = stage_spec(self.stage)
        log("train/stage", float(self.stage_index))
        for head in HEADS:
            log(f"train/head/{head}", float(head in spec.heads))
        log("train/self_distill", float(spec.self_distill))
        log("train/lr", float(self.optimizers().param_groups[0]["lr"]))
        log("train/negatives_per_query", float(self.negatives_per_query(batch)))
        elapsed = max(time.perf_counter() - self._step_started, 1e-9)
        log("train/queries_per_s", n_q * self.trainer.world_size / elapsed, prog_bar=True)
        log("train/tokens_per_s", batch.num_tokens * self.trainer.world_size / elapsed)

    def negatives_per_query(self, batch: M3Batch) -> int:
        """Candidates a query is contrasted with in the dense loss, minus its positive."""
        if batch.no_in_batch_neg:
            return batch.group_size - 1
        world = self.trainer.world_size if self.negatives_cross_device else 1
        return world * batch.num_passages - 1

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        opt, sched = self.optimizer_cfg, self.scheduler_cfg
        head_lr = opt.lr * opt.head_lr_scale if opt.head_lr_scale != 1.0 else None
        groups = param_groups(self.model, opt.weight_decay, head_lr=head_lr)
        # Lightning refuses to clip (after unscaling) an optimizer that unscales gradients itself (a fused one),
        # so under fp16 loss scaling the per-tensor AdamW is used; everywhere else the fused kernel
        # (build_optimizer's default), and ``_clip_gradients`` clips directly.
        scaled = self._trainer is not None and _loss_scaled(self._trainer)
        optimizer = build_optimizer(
            groups, lr=opt.lr, betas=opt.betas, eps=opt.eps, fused=False if scaled else None
        )
        total = sched.total_steps or int(self.trainer.estimated_stepping_batches)
        warmup = warmup_steps_for(total, sched.warmup_steps, sched.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(sched.name, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_META_KEY] = checkpoint_metadata(self.model, prefix="model.", stage=self.stage)
        checkpoint["m3lit_rng"] = _get_rng_state()
        _unfinish_stopped_epoch(checkpoint, self.trainer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CKPT_META_KEY) or {}
        if meta.get("stage") is not None:
            with suppress(ValueError):  # a foreign stage name keeps the configured stage
                self.stage = meta["stage"]
        self._pending_rng = checkpoint.get("m3lit_rng")


def _unfinish_stopped_epoch(checkpoint: dict[str, Any], trainer: L.Trainer) -> None:
    """A checkpoint written after ``max_steps`` stopped the run mid-epoch records that epoch as unfinished.

    Lightning counts the epoch as completed when ``max_steps`` ends the fit loop, so the final checkpoint
    (written in ``on_train_end``) said epoch e + 1 with e's batches done: a resume then started "epoch
    e + 1" at batch index k (the progress bar showed k/remaining, e.g. 15/5) and the export's ``m3lit.json``
    counted one epoch per resume. When the data epoch did not end (``is_last_batch`` is false), the epoch
    counter and the fit loop's epoch progress are put back to "epoch e, in progress".
    """
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    progress = (loop.get("epoch_progress") or {}).get("current") or {}
    stopped_mid_epoch = not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    if not stopped_mid_epoch or progress.get("completed", 0) < progress.get("started", 0):
        return
    for tracker in (loop["epoch_progress"]["current"], loop["epoch_progress"]["total"]):
        tracker["completed"] = tracker["processed"] = tracker["started"] - 1
    checkpoint["epoch"] = loop["epoch_progress"]["current"]["completed"]


def clamp_log_interval(trainer) -> None:
    """``trainer.log_every_n_steps`` > ``trainer.max_steps`` would log nothing at all: clamp it, with a warning.

    Lightning writes the step metrics to the loggers when the step count is a multiple of the interval, so a
    10-step run with ``log_every_n_steps=20`` would leave W&B and the CSV empty.
    """
    interval, max_steps = trainer.log_every_n_steps, trainer.max_steps
    if max_steps is None or max_steps <= 0 or not interval or interval <= max_steps:
        return
    rank_zero_warn(
        f"trainer.log_every_n_steps={interval} exceeds trainer.max_steps={max_steps}: nothing would be logged; "
        f"logging every {max_steps} steps instead (set trainer.log_every_n_steps to choose)"
    )
    trainer.log_every_n_steps = max_steps


def _get_rng_state() -> dict[str, Any]:
    """Global RNG states as plain data (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loss_scaled(trainer) -> bool:
    """Whether the trainer's precision plugin scales the loss (fp16 mixed precision: a ``GradScaler``)."""
    return getattr(trainer.precision_plugin, "scaler", None) is not None
