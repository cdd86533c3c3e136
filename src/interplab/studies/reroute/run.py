"""Run the rerouting study: HP, RR and LoRA + probe on the same model, layers and data.

Data flow: requests (generated or CSV) → split by template-and-entity block (no template or
entity on two sides) → neutral text chunks (training retain set; other documents held out) →
model → the controls on the unmodified model (bag of tokens, shuffled labels, reset network) →
HP per layer and pooling, layer chosen on validation → per training seed: RR and LoRA + probe
adapters (same initialisation), trained with checkpoints, and the parameter-matched MLP head →
scores on validation (thresholds at ``fpr``) and test → retain cost on held-out neutral text →
the two attacks on held-out unwanted requests, every defence with the same budget → intervals
over test requests and training seeds, paired permutation tests corrected with
Benjamini–Hochberg → :class:`RerouteResult`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression

from interplab.controls.detection import auroc, threshold_at_fpr
from interplab.datasets import entity_split
from interplab.datasets.corpus import load_corpus
from interplab.datasets.requests import load_requests_csv, requests_dataset
from interplab.defences.attacks import candidate_tokens, embedding_attack, token_attack
from interplab.defences.detectors import LoraProbeDetector, RerouteDetector, score_texts
from interplab.defences.heads import POOLINGS, fit_mlp, fit_probe, matched_width, pooled_features
from interplab.defences.inputs import COST
from interplab.defences.lora import AdapterHost
from interplab.defences.retain import output_shift, retain_effects
from interplab.defences.settings import CANDIDATE_WORDS
from interplab.defences.train import BaseCache, TrainTexts, train_adapter
from interplab.errors import InterplabError
from interplab.models import load, reset_copy
from interplab.progress import progress_display
from interplab.studies.reroute.config import (
    ATTACKED,
    GENERATED,
    LAYER_FRACTIONS,
    RerouteConfig,
    RerouteResult,
)
from interplab.studies.reroute.stats import analyse
from interplab.study.layers import choose_layer
from interplab.study.result import versions
from interplab.threads import AdaptiveThreads, pace


# ------------------------------------------------------------------------------ data
def load_requests(config: RerouteConfig) -> Any:
    limit = config.data.max_per_dataset or None
    if config.requests == GENERATED:
        return requests_dataset(config.run.seed, max_size=limit)
    ds = load_requests_csv(config.requests)
    if limit and len(ds) > limit:
        ds = ds.balanced_subsample(limit, seed=config.run.seed)
    return ds


def neutral_chunks(lm: Any, config: RerouteConfig) -> tuple[list[list[int]], list[list[int]]]:
    """Chunks of ``neutral_tokens`` tokens: training chunks from the first documents, held-out
    chunks from later documents (none shared)."""
    corpus = load_corpus(config.neutral_corpus)
    need = config.neutral_train + config.neutral_eval
    width = config.neutral_tokens
    chunks: list[tuple[int, list[int]]] = []
    for d, doc in enumerate(corpus.documents):
        ids = lm.tokenizer(doc[: 12 * width], add_special_tokens=True)["input_ids"]
        bos = [ids[0]] if lm.bos_token_id is not None else []
        body = ids[len(bos):]
        for k in range(0, len(body) - width + len(bos), width - len(bos)):
            piece = body[k:k + width - len(bos)]
            if len(piece) == width - len(bos):
                chunks.append((d, bos + piece))
            if len([c for c in chunks if c[0] == d]) >= 4:
                break
        if len(chunks) >= need + 8:
            break
    train = [c for _, c in chunks[:config.neutral_train]]
    last_doc = chunks[config.neutral_train - 1][0] if train else -1
    held = [c for d, c in chunks if d > last_doc][:config.neutral_eval]
    if len(train) < config.neutral_train or len(held) < config.neutral_eval:
        raise InterplabError(f"the {config.neutral_corpus} corpus gave {len(train)} training and "
                             f"{len(held)} held-out chunks of {width} tokens; lower "
                             "--neutral-train/--neutral-eval or --neutral-tokens")
    return train, held


def target_layers(config: RerouteConfig, n_layers: int) -> list[int]:
    if config.layers is not None:
        bad = [x for x in config.layers if x >= n_layers]
        if bad:
            raise InterplabError(f"--layers {bad} do not exist: the model has blocks "
                                 f"0-{n_layers - 1}")
        return sorted(set(config.layers))
    return sorted({max(1, min(n_layers - 1, round(f * n_layers))) for f in LAYER_FRACTIONS})


# ------------------------------------------------------------------------------ controls
def bag_of_tokens_auroc(tokens: list[list[int]], y: np.ndarray, train: np.ndarray,
                        test: np.ndarray, vocab: int) -> np.ndarray:
    """Test scores of an L2 logistic regression on token counts (position 0 left out)."""

    rows, cols = [], []
    for i, t in enumerate(tokens):
        rows += [i] * (len(t) - 1)
        cols += list(t[1:])
    X = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(tokens), vocab))
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(X[train], y[train])
    return clf.decision_function(X[test])


# ------------------------------------------------------------------------------ the run
def run_reroute(config: RerouteConfig, out_dir: str | Path | None = None, *,
                progress: bool = True, console: Console | None = None) -> RerouteResult:
    """Run the study described by ``config``; with ``out_dir`` training checkpoints go to
    ``<out_dir>/checkpoints`` (a re-run resumes or reuses them)."""

    config.validate()
    console = console or Console(stderr=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    ds = load_requests(config)
    split = entity_split(ds, tuple(config.data.split), seed=config.run.seed)
    timings["data_s"] = time.perf_counter() - t0
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None
    with AdaptiveThreads(config.run.threads) as threads, \
            progress_display(console, enabled=progress) as bar:
        state = _Run(config, ds, split, bar, timings, ckpt_dir)
        state.execute()
        threads_used = list(threads.used)
    timings["total_s"] = time.perf_counter() - t0
    timings["cpu_s"] = time.process_time() - cpu0
    return state.result(threads_used)


def run_into(config: RerouteConfig, out: Path, progress: bool) -> RerouteResult:
    """The registry's entry point: training checkpoints stay in ``out`` (a re-run resumes or
    reuses them)."""
    return run_reroute(config, out, progress=progress)


class _Run:
    """The study's state while it runs (one model, one adapter host, per-seed detectors)."""

    def __init__(self, config: RerouteConfig, ds: Any, split: Any, bar: Any,
                 timings: dict[str, float], ckpt_dir: Path | None) -> None:
        self.cfg, self.ds, self.split, self.bar = config, ds, split, bar
        self.timings, self.ckpt_dir = timings, ckpt_dir
        self.seeds = [config.run.seed + k for k in range(config.training_seeds)]
        self.y = np.asarray(ds.labels)
        self.cost: dict[str, dict[str, float]] = {}
        self.notes: list[str] = []

    # -- bookkeeping
    def _phase(self, name: str):
        run = self

        class Phase:
            def __enter__(self):
                self.t = time.perf_counter()
                self.c = COST.snapshot()
                return self

            def __exit__(self, *exc):
                f, b = COST.snapshot()
                entry = run.cost.setdefault(name, {"forward_block_tokens": 0,
                                                   "backward_block_tokens": 0, "seconds": 0.0})
                entry["forward_block_tokens"] += f - self.c[0]
                entry["backward_block_tokens"] += b - self.c[1]
                entry["seconds"] += time.perf_counter() - self.t
                return False

        return Phase()

    def execute(self) -> None:
        cfg = self.cfg
        t = time.perf_counter()
        self.lm = lm = load(cfg.run.model, device=cfg.run.device)
        self.identity = lm.identity()
        self.layers = target_layers(cfg, lm.n_layers)
        self.head_layer = max(self.layers)
        self.tokens = lm.tokenize(self.ds.statements, truncation="error")
        short = [i for i, t_ in enumerate(self.tokens) if len(t_) < 2]
        if short:
            raise InterplabError(f"request {self.ds.statements[short[0]]!r} is a single token; "
                                 "every request needs at least two")
        self.neutral_train, self.neutral_eval = neutral_chunks(lm, cfg)
        self.timings["load_s"] = time.perf_counter() - t
        self.idx = {s: np.asarray(r) for s, r in self.split.sides().items()}
        t = time.perf_counter()
        with self._phase("hp"):
            self._probes()
        self.timings["probes_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self._controls()
        self.timings["controls_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self._train()
        self.timings["training_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with self._phase("evaluation"):
            self._evaluate()
        self.timings["evaluation_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self._attack()
        self.timings["attacks_s"] = time.perf_counter() - t

    # -- HP on the unmodified model, layer and pooling chosen on validation
    def _probes(self) -> None:
        cfg, y, idx = self.cfg, self.y, self.idx
        self.features = pooled_features(self.lm, self.tokens, self.layers, cfg.run.batch_size)
        self.hp: dict[str, Any] = {}
        self.layer_choice: dict[str, Any] = {}
        for pooling in POOLINGS:
            fits = [fit_probe(self.features[(pooling, layer)][idx["train"]], y[idx["train"]],
                              name=pooling, layer=layer, pooling=pooling)
                    for layer in self.layers]
            val = [auroc(self.features[(pooling, f.layer)][idx["val"]] @ f.w.double().numpy()
                         + f.b, y[idx["val"]]) for f in fits]
            choice = choose_layer(self.layers, val)
            key = "hp" if pooling == "mean" else "hp_last"
            det = fits[self.layers.index(choice.layer)]
            det.name = key
            self.hp[key] = det
            self.layer_choice[key] = {**choice.to_dict(), "validation_metric": "AUROC"}
        self.hp_layer = self.hp["hp"].layer

    def _controls(self) -> None:
        """Bag of tokens, shuffled labels and the reset network: each should be near chance."""

        y, idx, cfg = self.y, self.idx, self.cfg
        test_y = y[idx["test"]]
        out: dict[str, Any] = {}
        vocab = max(len(self.lm.tokenizer), max(max(t) for t in self.tokens) + 1)
        out["bag_of_tokens"] = bag_of_tokens_auroc(self.tokens, y, idx["train"], idx["test"],
                                                   vocab)
        X = self.features[("mean", self.hp_layer)]
        shuffled = np.random.default_rng([cfg.run.seed, 61]).permutation(y[idx["train"]])
        det = fit_probe(X[idx["train"]], shuffled, name="shuffled", layer=self.hp_layer,
                        pooling="mean")
        out["shuffled_labels"] = X[idx["test"]] @ det.w.double().numpy() + det.b
        with self._phase("reset network"):
            reset = reset_copy(self.lm, seed=cfg.run.seed)
            R = pooled_features(reset, self.tokens, [self.hp_layer], cfg.run.batch_size)[
                ("mean", self.hp_layer)]
            self.reset_identity = reset.identity()
            del reset
        det = fit_probe(R[idx["train"]], y[idx["train"]], name="reset", layer=self.hp_layer,
                        pooling="mean")
        out["reset_network"] = R[idx["test"]] @ det.w.double().numpy() + det.b
        self.control_scores = out
        self.control_auroc = {k: auroc(v, test_y) for k, v in out.items()}

    # -- RR and LoRA + probe, per seed, and the matched MLP head
    def _train(self) -> None:
        cfg, y, idx, lm = self.cfg, self.y, self.idx, self.lm
        tr = idx["train"]
        self.texts = TrainTexts(unwanted=[self.tokens[i] for i in tr if y[i] == 1],
                                acceptable=[self.tokens[i] for i in tr if y[i] == 0],
                                neutral=self.neutral_train)
        self.host = host = AdapterHost(lm, self.layers, cfg.adapters.rank, cfg.adapters.lora_alpha)
        with self._phase("base activations for training"):
            cache = BaseCache(host, self.texts, self.layers, self.head_layer, cfg.run.batch_size)
        fingerprint_base = {
            "model": self.identity, "requests": self.ds.content_hash,
            "split": self.split.rule, "layers": self.layers,
            "adapters": asdict(cfg.adapters), "training": {
                k: v for k, v in asdict(cfg.training).items() if k != "checkpoint_every"},
            "neutral": hashlib.sha256(json.dumps(self.neutral_train).encode()).hexdigest()}
        self.detectors: dict[str, list[Any]] = {"rr": [], "lp": [], "hp_mlp": []}
        self.history: dict[str, list[list[dict]]] = {"rr": [], "lp": []}
        self.resumed: list[dict[str, Any]] = []
        task = self.bar.add_task("train RR and LoRA + probe",
                                 total=2 * len(self.seeds) * cfg.training.steps)

        def step() -> None:
            self.bar.advance(task)
            pace()

        for seed in self.seeds:
            outcomes = {}
            for kind in ("rr", "lp"):
                name = f"{kind}-seed{seed}"
                host.add(name, seed)
                with self._phase(f"training {kind}"):
                    o = train_adapter(
                        host, name, kind, self.texts, cache, layers=self.layers,
                        head_layer=self.head_layer, settings=cfg.training, seed=seed,
                        checkpoint_dir=self.ckpt_dir,
                        fingerprint={**fingerprint_base, "objective": kind, "seed": seed},
                        on_step=step)
                if o.loaded or o.resumed_from:
                    self.bar.advance(task, cfg.training.steps if o.loaded else o.resumed_from)
                    self.resumed.append({"adapter": name, "from_step": o.resumed_from,
                                         "finished_before": o.loaded})
                outcomes[kind] = o
                self.history[kind].append(o.history)
            n_adapter = host.n_parameters(f"rr-seed{seed}")
            self.detectors["rr"].append(RerouteDetector(
                name=f"rr-seed{seed}", adapter=f"rr-seed{seed}", layers=list(self.layers),
                n_adapter_parameters=n_adapter))
            lp = outcomes["lp"]
            self.detectors["lp"].append(LoraProbeDetector(
                name=f"lp-seed{seed}", adapter=f"lp-seed{seed}", layer=self.head_layer, scale=lp.head_scale,
                w=lp.head_w.detach().clone(), b=lp.head_b.detach().clone(),
                n_adapter_parameters=host.n_parameters(f"lp-seed{seed}")))
            width = matched_width(self.detectors["lp"][-1].n_parameters, lm.d_model)
            with self._phase("training hp_mlp"):
                self.detectors["hp_mlp"].append(fit_mlp(
                    self.features[("mean", self.hp_layer)][tr], y[tr], hidden=width, seed=seed,
                    name=f"hp_mlp-seed{seed}", layer=self.hp_layer))
        self.same_adapters = _same_adapters(host, self.seeds)

    def _evaluate(self) -> None:
        cfg, y, idx, host = self.cfg, self.y, self.idx, self.host
        bs = cfg.run.batch_size
        sides = {s: [self.tokens[i] for i in idx[s]] for s in ("val", "test")}
        self.scores: dict[str, dict[str, np.ndarray]] = {"val": {}, "test": {}}
        task = self.bar.add_task("score held-out requests", total=len(sides))
        # every detector of every seed in one call: one unmodified pass, one pass per adapter
        dets = [self.hp["hp"], self.hp["hp_last"],
                *(d for key in ("rr", "lp", "hp_mlp") for d in self.detectors[key])]
        rr_adapters = [d.adapter for d in self.detectors["rr"]]
        for side, toks in sides.items():
            got = score_texts(host, dets, toks, bs)
            for key in ("hp", "hp_last"):  # one fit, the same in every seed
                self.scores[side][key] = np.tile(got[key], (len(self.seeds), 1))
            for key in ("rr", "lp", "hp_mlp"):
                self.scores[side][key] = np.stack([got[d.name] for d in self.detectors[key]])
            shift = output_shift(host, rr_adapters, toks, bs)
            self.scores[side]["rr_output"] = np.stack([shift[a] for a in rr_adapters])
            self.bar.advance(task)
        # thresholds on validation: at most `fpr` of the acceptable requests flagged
        val_neg = y[idx["val"]] == 0
        self.thresholds = {key: np.array([threshold_at_fpr(s[val_neg], cfg.fpr) for s in v])
                           for key, v in self.scores["val"].items()}
        adapters = [d.adapter for key in ("rr", "lp") for d in self.detectors[key]]
        eff = retain_effects(host, adapters, self.neutral_eval, max(1, bs // 4))
        n = len(self.neutral_eval)
        self.retain = {"base_ce": eff["base"]["ce"]}
        for key in ("rr", "lp"):
            self.retain[key] = {m: np.stack([eff[d.adapter][m] for d in self.detectors[key]])
                                for m in ("delta_ce", "kl", "ce")}
        zeros = np.zeros((len(self.seeds), n))
        for key in ("hp", "hp_last", "hp_mlp", "rr_output"):
            self.retain[key] = {"delta_ce": zeros, "kl": zeros}
        self.retain["rr_output"] = self.retain["rr"]

    def _attack(self) -> None:
        cfg, y, idx, host = self.cfg, self.y, self.idx, self.host
        a = cfg.attacks
        test_unwanted = idx["test"][y[idx["test"]] == 1]
        n = min(a.attack_examples, len(test_unwanted))
        self.attack_rows = np.sort(np.random.default_rng([cfg.run.seed, 67]).choice(
            test_unwanted, size=n, replace=False)) if n else np.array([], dtype=int)
        self.candidates = candidate_tokens(self.lm, CANDIDATE_WORDS, a.token_candidates)
        self.embed_budgets = sorted({0, *[s for s in (1, 2, 4, 8, 16, 32, 64) if s < a.embed_steps],
                                     a.embed_steps})
        self.attack_scores: dict[str, dict[str, np.ndarray]] = {"embed": {}, "token": {}}
        self.attacked_examples: list[str] = []
        if not n:
            return
        toks = [self.tokens[i] for i in self.attack_rows]
        bs = self.cfg.run.batch_size
        total = sum(1 if key == "hp" else len(self.seeds) for key in ATTACKED)
        task = self.bar.add_task("attack every defence", total=total)
        for key in ATTACKED:
            dets = [self.hp["hp"]] if key == "hp" else self.detectors[key]
            emb, tok = [], []
            for det in dets:
                with self._phase(f"embedding attack on {key}"):
                    emb.append(embedding_attack(host, det, toks, steps=a.embed_steps,
                                                norm=a.embed_norm, budgets=self.embed_budgets,
                                                batch_size=bs))
                with self._phase(f"token attack on {key}"):
                    t_scores, attacked = token_attack(
                        host, det, toks, candidates=self.candidates, n_tokens=a.token_positions,
                        where=a.attack_position, batch_size=bs)
                    tok.append(t_scores)
                if key == "rr" and not self.attacked_examples:
                    self.attacked_examples = [self.lm.tokenizer.decode(t) for t in attacked[:3]]
                self.bar.advance(task)
                pace()
            if key == "hp":  # deterministic: the same detector in every seed
                emb, tok = emb * len(self.seeds), tok * len(self.seeds)
            self.attack_scores["embed"][key] = np.stack(emb)  # [S, budgets, n]
            self.attack_scores["token"][key] = np.stack(tok)

    # -- numbers → result
    def result(self, threads_used: list[int]) -> RerouteResult:
        analysis = analyse(self)
        cfg = self.cfg
        cost = self._cost_info()
        return RerouteResult(
            config=asdict(cfg), versions=versions(), model=self.identity,
            data=self._data_info(), layers=self._layer_info(),
            defences=analysis["defences"], comparisons=analysis["comparisons"],
            headline=analysis["headline"], controls=analysis["controls"],
            training={"history": self.history, "resumed": self.resumed,
                      "same_adapters": self.same_adapters, "seeds": self.seeds},
            attacks=analysis["attacks"], cost=cost,
            method=_method(cfg, self), summary=analysis["summary"],
            notes=self.notes + analysis["notes"],
            timings={**self.timings, "threads": threads_used[-1]})

    def _data_info(self) -> dict[str, Any]:
        sides = self.split.sides()
        return {**self.ds.identity, "split_rule": self.split.rule, "group_by": self.ds.group_by,
                **{f"n_{s}": int(len(r)) for s, r in sides.items()},
                **{f"n_{s}_unwanted": int(self.y[r].sum()) for s, r in sides.items()},
                "examples": {"unwanted": [self.ds.statements[i] for i in
                                          np.flatnonzero(self.y == 1)[:3]],
                             "acceptable": [self.ds.statements[i] for i in
                                            np.flatnonzero(self.y == 0)[:3]]},
                "neutral_corpus": self.cfg.neutral_corpus,
                "n_neutral_train": len(self.neutral_train),
                "n_neutral_eval": len(self.neutral_eval),
                "mean_request_tokens": float(np.mean([len(t) for t in self.tokens]))}

    def _layer_info(self) -> dict[str, Any]:
        return {"target": self.layers, "adapted_blocks": self.host.layers,
                "head_layer": self.head_layer, "hp_choice": self.layer_choice,
                "n_layers": self.lm.n_layers, "adapted_modules": len(self.host.targets)}

    def _cost_info(self) -> dict[str, Any]:
        """Each phase in forward-pass equivalents: one FPE is one forward pass of the full model
        over one average request; a backward pass counts as two forwards."""
        unit = self.lm.n_layers * float(np.mean([len(t) for t in self.tokens]))
        phases = {}
        for name, c in self.cost.items():  # seconds go to the timings (not compared by rerun)
            fpe = (c["forward_block_tokens"] + 2 * c["backward_block_tokens"]) / unit
            phases[name] = {k: v for k, v in c.items() if k != "seconds"} | {"fpe": fpe}
            self.timings[f"{name}_s"] = c["seconds"]
        per_run = {k: phases[f"training {k}"]["fpe"] / len(self.seeds)
                   for k in ("rr", "lp") if f"training {k}" in phases}
        return {"unit": "one forward pass of the full model over one average request "
                        f"({unit / self.lm.n_layers:.1f} tokens); backward = 2 forwards",
                "phases": phases, "per_training_run_fpe": per_run,
                "n_attacked": int(len(self.attack_rows))}


def _same_adapters(host: Any, seeds: list[int]) -> dict[str, Any]:
    """Whether every seed's RR and LoRA + probe adapters have the same parameter names and
    shapes (their values differ after training)."""
    same = True
    for seed in seeds:
        a, b = host.parameters(f"rr-seed{seed}"), host.parameters(f"lp-seed{seed}")
        same &= list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    first = host.parameters(f"rr-seed{seeds[0]}")
    return {"same_names_and_shapes": bool(same), "n_tensors": len(first),
            "n_parameters": int(sum(p.numel() for p in first.values()))}


def _method(cfg: RerouteConfig, run: _Run) -> dict[str, Any]:
    a, tr = cfg.attacks, cfg.training
    return {
        "data": ("requests about animals are unwanted, the same templates about everyday "
                 "objects acceptable; templates and entities are dealt into blocks and the split "
                 "is by block, so no template and no entity is on two sides"
                 if cfg.requests == GENERATED else f"requests from {cfg.requests}, split by "
                 f"{run.ds.group_by}"),
        "tokens": "resid_post (before the final norm) at the target layers; a request is pooled "
                  "over every real token but position 0 (mean), or read at its last token",
        "hp": "interplab's logistic probe (L2, C = 1 on unit-RMS inputs, centred by the "
              "training mean) per target layer and pooling; layer chosen by validation AUROC; "
              "one deterministic fit, the same in every seed",
        "hp_mlp": "scikit-learn MLPClassifier, one ReLU hidden layer whose width matches the "
                  "parameter count of LoRA + probe (adapters + head), standardised inputs, "
                  "L2 alpha 0.01, trained per seed at HP's layer (mean pooling)",
        "rr": f"LoRA rank {cfg.adapters.rank}, alpha {cfg.adapters.lora_alpha:g}, on every "
              f"linear layer of blocks 0-{max(run.layers)}; loss c_rr·ReLU(cos(h, h₀)) on "
              "unwanted requests + c_ret·‖h − h₀‖/n̄ on acceptable requests and neutral text, "
              "at the target layers; c_rr = 1 − t/2T, c_ret = t/2T; score: mean 1 − cos(h, h₀) "
              "over the target layers and the request's tokens",
        "lp": "the same adapters (same modules, rank, alpha, initialisation seed, steps, "
              "learning rate, batches) plus a linear head on the adapted mean-pooled "
              f"resid_post at block {run.head_layer}; binary cross-entropy in place of the "
              "rerouting loss, the same retain loss and schedule; score: the head's logit",
        "training": f"AdamW, lr {tr.lr:g}, {tr.steps} steps of {tr.train_batch} unwanted + "
                    f"{tr.train_batch} acceptable requests + {tr.neutral_batch} neutral chunks "
                    f"({cfg.neutral_tokens} tokens); seeds {run.seeds}",
        "thresholds": f"each defence and seed flags a request when its score exceeds the "
                      f"threshold that flags at most {cfg.fpr:.0%} of the validation split's "
                      "acceptable requests",
        "tpr_1pct": "TPR at the test threshold that flags at most 1 % of the test split's "
                    "acceptable requests (with fewer than 100 of them: none)",
        "attacks": f"on {len(run.attack_rows)} held-out unwanted requests, every defence with "
                   f"the same budget: input-embedding attack ({a.embed_steps} PGD steps, every "
                   f"token's embedding within L2 radius {a.embed_norm:g} × the mean embedding "
                   f"norm); token attack (greedy, {a.token_positions} {a.attack_position} tokens "
                   f"from a fixed set of {len(run.candidates)}); success: the score falls below "
                   "the defence's threshold (best so far at each budget)",
        "retain": f"cross-entropy and KL(unmodified ‖ adapted) on {len(run.neutral_eval)} "
                  f"held-out {cfg.neutral_corpus} chunks of {cfg.neutral_tokens} tokens; HP and "
                  "its MLP do not change the model (exactly 0)",
        "intervals": f"95 % percentile bootstrap ({cfg.run.n_boot} draws) resampling test "
                     "requests (within each class) and training seeds together",
        "tests": f"paired permutation tests ({cfg.n_perm} permutations; detection scores "
                 "rank-normalised within each defence and seed), Benjamini-Hochberg over every "
                 "comparison of the study",
    }
