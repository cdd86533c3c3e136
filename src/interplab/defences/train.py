"""Training RR and LoRA + probe: the same adapters, texts, order, steps and learning rate.

At step ``t`` of ``T`` both objectives see the same batch: ``train_batch`` unwanted requests,
as many acceptable requests and ``neutral_batch`` chunks of neutral text (drawn under
``(seed, t)``). With ``h`` the adapted and ``h₀`` the unmodified model's ``resid_post`` at the
target layers (scored tokens: every real token but position 0):

- **retain** (both): ``‖h − h₀‖₂ / n̄_l`` averaged over the acceptable and neutral tokens and the
  target layers, ``n̄_l`` the mean ``‖h₀‖`` of the training tokens at layer ``l`` (a constant, so
  the loss means the same at every layer and in every model; Zou et al. use the raw norm, which
  in a short run keeps RR from ever leaving its starting point, where the rerouting loss has
  zero gradient);
- **rerouting** (RR): ``ReLU(cos(h, h₀))`` averaged over the unwanted tokens and target layers;
- **classification** (LoRA + probe): binary cross-entropy of a linear head on the adapted
  residual stream at the head layer, mean over the text's scored tokens and divided by the
  training texts' RMS there, on the unwanted (1) and acceptable (0) requests.

Loss ``c_main(t) · main + c_retain(t) · retain`` with the schedule of Zou et al. (2024):
``c_main = 1 − t / 2T`` falls from 1 to ½ while ``c_retain = t / 2T`` rises from 0 to ½.
``objective="retain"`` trains on the retain term alone (a control).

Checkpoints (adapter, head, AdamW state, step, loss history) are written atomically every
``checkpoint_every`` steps and at the end; a run with the same fingerprint resumes from the last
one, and a finished run is loaded instead of trained.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interplab.defaults import DEFAULT_BATCH_SIZE
from interplab.defences.inputs import pack, pool, residuals
from interplab.defences.settings import TrainSettings
from interplab.errors import InterplabError
from interplab.fileio import atomic_write_json, atomic_write_safetensors

OBJECTIVES = ("rr", "lp", "retain")


@dataclass
class TrainTexts:
    """Token lists: unwanted and acceptable training requests, neutral text chunks."""

    unwanted: list[list[int]]
    acceptable: list[list[int]]
    neutral: list[list[int]]

    def check(self, settings: TrainSettings) -> None:
        if not self.unwanted or not self.acceptable:
            raise InterplabError("training needs unwanted and acceptable requests")
        if settings.neutral_batch and not self.neutral:
            raise InterplabError("--neutral-batch > 0 but there is no neutral text")


class BaseCache:
    """The unmodified model's ``resid_post`` at ``layers`` for every training text, computed once
    and shared by every objective and seed; also each layer's mean token norm and the pooled
    RMS at ``head_layer``."""

    def __init__(self, host, texts: TrainTexts, layers: Sequence[int], head_layer: int,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.layers = sorted(set(layers) | {head_layer})
        self.reps: dict[str, list[dict[int, torch.Tensor]]] = {}
        lm = host.lm
        sums = {layer: [0.0, 0] for layer in self.layers}
        pooled = []
        with torch.no_grad(), host.disabled():
            for kind in ("unwanted", "acceptable", "neutral"):
                lists = getattr(texts, kind)
                rows: list[dict[int, torch.Tensor]] = []
                for start in range(0, len(lists), batch_size):
                    part = lists[start:start + batch_size]
                    inputs = pack(lm, part)
                    reps = residuals(lm, inputs, self.layers)
                    for i, t in enumerate(part):
                        rows.append({layer: reps[layer][i, :len(t)].clone()
                                     for layer in self.layers})
                    for layer in self.layers:
                        norms = reps[layer].norm(dim=-1)[inputs.scored]
                        sums[layer][0] += float(norms.sum())
                        sums[layer][1] += int(norms.numel())
                    if kind != "neutral":
                        pooled.append(pool(reps[head_layer], inputs, "mean"))
                self.reps[kind] = rows
        self.norm = {layer: s / max(n, 1) for layer, (s, n) in sums.items()}
        self.head_scale = float(torch.cat(pooled).pow(2).mean().sqrt())

    def batch(self, kind: str, idx: Sequence[int], width: int) -> dict[int, torch.Tensor]:
        """``[b, width, d]`` per layer for rows ``idx`` of ``kind`` (zero past each text)."""
        out = {}
        for layer in self.layers:
            rows = [self.reps[kind][i][layer] for i in idx]
            x = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
            for i, r in enumerate(rows):
                x[i, :len(r)] = r
            out[layer] = x
        return out


def schedule(step: int, steps: int) -> tuple[float, float]:
    """``(c_main, c_retain)`` at ``step`` of ``steps``."""
    frac = step / (2 * steps)
    return 1.0 - frac, frac


@dataclass
class TrainOutcome:
    """A finished run: the head (LoRA + probe), the per-step history and how it got there."""

    head_w: torch.Tensor | None
    head_b: torch.Tensor | None
    head_scale: float
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    loaded: bool = False


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(values.dtype)
    return (values * w).sum() / w.sum().clamp(min=1.0)


def _draw(rng: np.random.Generator, n: int, k: int) -> list[int]:
    return rng.choice(n, size=min(k, n), replace=False).tolist() if k else []


def train_adapter(host, name: str, objective: str, texts: TrainTexts, cache: BaseCache, *,
                  layers: Sequence[int], head_layer: int, settings: TrainSettings, seed: int,
                  checkpoint_dir: str | Path | None = None,
                  fingerprint: dict[str, Any] | None = None,
                  on_step: Callable[[], None] | None = None) -> TrainOutcome:
    """Train adapter ``name`` (already added to ``host``) on ``objective`` (``rr``, ``lp`` or
    ``retain``); see the module docstring."""
    if objective not in OBJECTIVES:
        raise InterplabError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    texts.check(settings)
    lm = host.lm
    layers = sorted(set(layers))
    params = dict(host.parameters(name))
    head_w = head_b = None
    if objective == "lp":
        head_w = torch.zeros(lm.d_model, device=lm.device, requires_grad=True)
        head_b = torch.zeros(1, device=lm.device, requires_grad=True)
        params.update({"head.w": head_w, "head.b": head_b})
    opt = torch.optim.AdamW(list(params.values()), lr=settings.lr, weight_decay=0.0)
    ckpt = _Checkpoint(checkpoint_dir, name, fingerprint) if checkpoint_dir is not None else None
    start, history = 0, []
    if ckpt is not None and ckpt.exists():
        start, history, complete = ckpt.load(params, opt)
        if complete:
            return TrainOutcome(head_w, head_b, cache.head_scale, history, start, loaded=True)
    resumed_from = start
    need = sorted(set(layers) | ({head_layer} if objective == "lp" else set()))
    T = settings.steps
    for t in range(start, T):
        rng = np.random.default_rng([seed, 7, t])
        u = _draw(rng, len(texts.unwanted), settings.train_batch)
        a = _draw(rng, len(texts.acceptable), settings.train_batch)
        nn_ = _draw(rng, len(texts.neutral), settings.neutral_batch)
        c_main, c_ret = schedule(t, T)
        with host.active(name):
            req = pack(lm, [texts.unwanted[i] for i in u] + [texts.acceptable[i] for i in a])
            reps = residuals(lm, req, need, differentiated=True)
            neu = pack(lm, [texts.neutral[i] for i in nn_]) if nn_ else None
            neu_reps = residuals(lm, neu, layers, differentiated=True) if neu else None
        width = req.ids.shape[1]
        orig_u = cache.batch("unwanted", u, width)
        orig_a = cache.batch("acceptable", a, width)
        nu = len(u)
        retain_terms, retain_masks, main_terms = [], [], []
        for layer in layers:
            h, h0 = reps[layer], torch.cat([orig_u[layer], orig_a[layer]])
            dist = (h[nu:] - h0[nu:]).norm(dim=-1) / cache.norm[layer]
            retain_terms.append(dist)
            retain_masks.append(req.scored[nu:])
            if neu is not None:
                n0 = cache.batch("neutral", nn_, neu.ids.shape[1])[layer]
                retain_terms.append((neu_reps[layer] - n0).norm(dim=-1) / cache.norm[layer])
                retain_masks.append(neu.scored)
            if objective == "rr":
                cos = torch.nn.functional.cosine_similarity(h[:nu], h0[:nu], dim=-1)
                main_terms.append(_masked_mean(torch.relu(cos), req.scored[:nu]))
        retain = (sum((v * m).sum() for v, m in zip(retain_terms, retain_masks, strict=True))
                  / sum(m.sum() for m in retain_masks).clamp(min=1))
        if objective == "rr":
            main = torch.stack(main_terms).mean()
        elif objective == "lp":
            x = pool(reps[head_layer], req, "mean") / cache.head_scale
            logits = x @ head_w + head_b
            y = torch.cat([torch.ones(nu), torch.zeros(len(a))]).to(logits)
            main = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        else:
            main = retain.new_zeros(())
        loss = retain if objective == "retain" else c_main * main + c_ret * retain
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": t + 1, "main": float(main.detach()), "retain": float(retain.detach()),
                        "c_main": c_main, "c_retain": c_ret})
        if ckpt is not None and ((t + 1) % settings.checkpoint_every == 0 or t + 1 == T):
            ckpt.save(params, opt, t + 1, history, complete=t + 1 == T)
        if on_step is not None:
            on_step()
    return TrainOutcome(head_w, head_b, cache.head_scale, history, resumed_from)


class _Checkpoint:
    """``<dir>/<name>.safetensors`` (adapter, head, AdamW state) + ``<name>.json`` (step,
    history, fingerprint), each written atomically; the JSON is written last."""

    def __init__(self, folder: str | Path, name: str, fingerprint: dict[str, Any] | None) -> None:
        self.folder = Path(folder)
        self.tensors = self.folder / f"{name}.safetensors"
        self.meta = self.folder / f"{name}.json"
        self.fingerprint = json.loads(json.dumps(fingerprint or {}, default=str))

    def exists(self) -> bool:
        return self.meta.is_file() and self.tensors.is_file()

    def save(self, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer, step: int,
             history: list[dict[str, float]], complete: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"param.{n}": p.detach().cpu().contiguous() for n, p in params.items()}
        state = opt.state_dict()
        for idx, st in state["state"].items():
            for key, value in st.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        atomic_write_safetensors(self.tensors, tensors)
        atomic_write_json(self.meta, {"step": step, "complete": complete, "history": history,
                                      "fingerprint": self.fingerprint,
                                      "param_groups": state["param_groups"]})

    def load(self, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer
             ) -> tuple[int, list[dict[str, float]], bool]:
        from safetensors.torch import load_file

        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
            tensors = load_file(str(self.tensors))
        except (OSError, ValueError) as exc:
            raise InterplabError(f"training checkpoint {self.meta} cannot be read ({exc}); "
                                 f"delete {self.folder} to train afresh") from None
        if meta.get("fingerprint") != self.fingerprint:
            old, new = meta.get("fingerprint") or {}, self.fingerprint
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise InterplabError(f"training checkpoint {self.meta} belongs to another run (its "
                                 f"{', '.join(differ) or 'settings'} differ); use another --out "
                                 f"or delete {self.folder}")
        with torch.no_grad():
            for n, p in params.items():
                key = f"param.{n}"
                if key not in tensors or tensors[key].shape != p.shape:
                    raise InterplabError(f"training checkpoint {self.tensors} does not hold "
                                         f"{n} as this run has it; delete {self.folder}")
                p.copy_(tensors[key].to(p))
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        if state:
            opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        return int(meta["step"]), list(meta["history"]), bool(meta["complete"])
