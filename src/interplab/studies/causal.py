"""The causal truth study: do the truth probes' directions *change* what the model says?

Following the geometry-of-truth causal experiment: a few-shot prompt of labelled city statements
ending "… This statement is:", scored by P(true word) − P(false word). Probes (mass-mean,
logistic, LDA) are fitted on the training split of cities + neg_cities (entity split, as in the
truth study) at every layer; their directions, each scaled to the class-mean gap at its layer,
are added over a window of layers at the statement's final tokens of held-out (test-split)
statements: false ones pushed towards TRUE, true ones towards FALSE, over a dose series, beside
norm-matched random directions (the null), with the side effects (KL at the answer, ΔCE on
neutral text). Then clean → corrupted patching (true vs false country for the same city) over
layers × final positions shows where the truth information flows, and attribution patching vs
integrated gradients vs exact patching are compared per hook kind on the same pairs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.console import Console

from interplab.errors import InterplabError
from interplab.studies.config import JsonResult

PROBE_LABELS = {"diffmean": "mass-mean", "logistic": "logistic", "lda": "LDA"}


@dataclass
class CausalConfig:
    """Everything that defines a causal-study run (saved with the result)."""

    model: str = field(default="smollm2-135m", metadata={"help": "Registry name, HF folder or .gguf."})
    probes: list[str] = field(default_factory=lambda: ["diffmean", "logistic", "lda"],
                              metadata={"help": "Probes whose directions are steered."})
    max_per_dataset: int = field(default=400, metadata={
        "help": "Statements kept of cities and of neg_cities (balanced)."})
    split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2], metadata={
        "help": "Train, validation, test fractions (split by entity)."})
    n_shots: int = field(default=4, metadata={
        "help": "Labelled examples (training split) in the few-shot prefix."})
    n_prompts: int = field(default=64, metadata={
        "help": "Held-out statements steered (half true, half false)."})
    steer_layers: list[int] | None = field(default=None, metadata={
        "help": "Steered layers (none: a window around the best validation layer)."})
    n_steer_layers: int = field(default=4, metadata={"help": "Width of that window."})
    steer_tokens: int = field(default=2, metadata={
        "help": "The statement's last tokens steered (final word piece and period)."})
    doses: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0],
                               metadata={"help": "Doses in class-mean gaps per steered layer."})
    n_null: int = field(default=200, metadata={
        "help": "Random directions in the null (a p-value's floor is 1/(k+1)). The 6 p-values "
                "(3 probes, 3 patched nodes) are corrected together: with 200 a lone effect at "
                "its floor gets q = 0.030, three get q < 0.01; q < 0.01 alone needs 600 (about 8× "
                "the run time)."})
    n_neutral: int = field(default=4, metadata={"help": "Neutral (KJV) texts for ΔCE."})
    neutral_tokens: int = field(default=48, metadata={"help": "Tokens per neutral text."})
    patch_pairs: int = field(default=12, metadata={
        "help": "True/false pairs about one city for the patching map."})
    patch_layer_stride: int = field(default=2, metadata={"help": "Every k-th layer patched."})
    patch_tokens: int = field(default=8, metadata={"help": "Final prompt tokens patched."})
    attr_pairs: int = field(default=8, metadata={"help": "Pairs in the attribution comparison."})
    attr_layers: list[int] | None = field(default=None, metadata={
        "help": "Layers whose resid_post, attn_out, mlp_out are attributed (none: five spread "
                "evenly, block ⌊(i + ½)·L/5⌋ of L; 3,9,15,21,27 on a 30-block model)."})
    attr_tokens: int = field(default=6, metadata={"help": "Final prompt tokens attributed."})
    ig_steps: int = field(default=4, metadata={"help": "Integrated-gradients steps."})
    n_exact: int = field(default=12, metadata={"help": "Exactly patched nodes per hook kind."})
    answer_true: list[str] = field(default_factory=lambda: ["TRUE", "True"], metadata={
        "help": "Spellings of the true answer (read after a space); the first that is one "
                "token is used."})
    answer_false: list[str] = field(default_factory=lambda: ["FALSE", "False"], metadata={
        "help": "Spellings of the false answer (read after a space); the first that is one "
                "token is used."})
    seed: int = field(default=0, metadata={"help": "Seed of splits, prompts, nulls."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples."})
    batch_size: int = field(default=64, metadata={"help": "Rows per forward pass."})
    device: str | None = field(default=None, metadata={"help": "Torch device (default: CPU)."})

    def validate(self) -> None:
        from interplab.probes import PROBES

        bad = [p for p in self.probes if p not in PROBES or p == "ccs"]
        if bad or not self.probes:
            raise InterplabError(f"probes must be among diffmean, logistic, lda, massmean-iid; "
                                 f"got {self.probes}")
        if len(self.doses) < 5 or 0.0 not in self.doses or min(self.doses) >= 0:
            raise InterplabError("doses need at least 5 values including 0 and a negative one, "
                                 "e.g. -2,-1,-0.5,0,0.5,1,2")
        if self.n_null < 20:
            raise InterplabError(f"n_null must be at least 20 for a usable null, not {self.n_null}")
        for name in ("n_prompts", "patch_pairs", "attr_pairs", "n_shots", "steer_tokens",
                     "patch_tokens", "attr_tokens", "ig_steps", "n_steer_layers"):
            if getattr(self, name) < 1:
                raise InterplabError(f"{name} must be at least 1")
        if self.patch_layer_stride < 1:
            raise InterplabError(f"--patch-layer-stride must be at least 1 (every k-th layer is "
                                 f"patched), not {self.patch_layer_stride}")
        for option, layers in (("--layers", self.steer_layers), ("--attr-layers",
                                                                   self.attr_layers)):
            if layers is not None and (not layers or min(layers) < 0):
                raise InterplabError(f"{option} must list block indices ≥ 0, got {layers}")

    def check_layers(self, n_layers: int) -> None:
        """Refuse layer options outside a model of ``n_layers`` blocks (once it is loaded, before
        anything runs on it)."""
        last = n_layers - 1
        for option, layers in (("--layers", self.steer_layers), ("--attr-layers",
                                                                   self.attr_layers)):
            bad = sorted({layer for layer in layers or [] if layer > last})
            if bad:
                raise InterplabError(f"{option}: layer(s) {', '.join(map(str, bad))} do not exist; "
                                     f"the model has {n_layers} blocks (0–{last})")
        if self.steer_layers is None and self.n_steer_layers > n_layers:
            raise InterplabError(f"--n-layers {self.n_steer_layers} is wider than the model's "
                                 f"{n_layers} blocks; give at most {n_layers}")

    def attribution_layers(self, n_layers: int) -> list[int]:
        """``attr_layers``, or five blocks spread evenly over ``n_layers`` (fewer when the model
        has fewer than five)."""
        if self.attr_layers is not None:
            return sorted(set(self.attr_layers))
        return sorted({int((i + 0.5) * n_layers / 5) for i in range(5)})


@dataclass
class CausalResult(JsonResult):
    """A causal-study result: config, data, probes, steering, patching, attribution, findings."""

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    data: dict[str, Any]
    probes: dict[str, Any]
    steering: dict[str, dict[str, Any]]  # probe -> InterventionResult.to_dict()
    comparison: list[dict[str, Any]]
    patching: dict[str, Any]
    attribution: dict[str, Any]
    findings: list[str]
    notes: list[str]
    timings: dict[str, float]
    # every p-value of the study corrected as one family (controls.multiple.Family.to_dict());
    # None in results written before the correction
    statistics: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------- data
def _datasets(config: CausalConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """cities and neg_cities, subsampled and split by entity exactly as the truth study does."""
    from interplab.datasets import entity_split, load_dataset

    out, splits = {}, {}
    for name in ("cities", "neg_cities"):
        ds = load_dataset(name, seed=config.seed)
        if config.max_per_dataset < len(ds):  # twins keep their alignment (same seed, quotas)
            ds = ds.balanced_subsample(config.max_per_dataset, seed=config.seed)
        out[name], splits[name] = ds, entity_split(ds, tuple(config.split), seed=config.seed)
    return out, splits


# ---------------------------------------------------------------------------------- probes
def _fit_probes(config: CausalConfig, datasets: dict, splits: dict, acts: dict[str, np.ndarray],
                ) -> tuple[dict[str, np.ndarray], dict[str, list[float]], np.ndarray]:
    """Per probe the direction at every layer ``[L, d]`` (scaled to the class-mean gap), its
    validation accuracy per layer, and the gap norm per layer."""
    from interplab.probes import make_probe

    def part(side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = np.concatenate([acts[n][:, getattr(splits[n], side)] for n in datasets], axis=1)
        y = np.concatenate([datasets[n].labels[getattr(splits[n], side)] for n in datasets])
        g = np.concatenate([[n] * len(getattr(splits[n], side)) for n in datasets])
        return X, y, g

    (Xtr, ytr, gtr), (Xva, yva, gva) = part("train"), part("val")
    n_layers = Xtr.shape[0]
    gap = np.array([np.linalg.norm(Xtr[li, ytr == 1].mean(0) - Xtr[li, ytr == 0].mean(0))
                    for li in range(n_layers)])
    directions, val = {}, {}
    for name in config.probes:
        dirs, accs = [], []
        for li in range(n_layers):
            probe = make_probe(name, centering="per-dataset").fit(Xtr[li], ytr, groups=gtr)
            d = probe.direction_
            dirs.append(d / np.linalg.norm(d) * gap[li])
            accs.append(float(np.mean(_predict(probe, Xva[li], gva) == yva)))
        directions[name], val[name] = np.stack(dirs), accs
    return directions, val, gap


def _predict(probe: Any, X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.empty(len(X), dtype=np.int64)
    for g in np.unique(groups):  # per-dataset centring, as the probe was trained
        out[groups == g] = probe.predict(X[groups == g])
    return out


def _steer_window(config: CausalConfig, val: dict[str, list[float]], n_layers: int) -> list[int]:
    if config.steer_layers is not None:
        return list(config.steer_layers)
    best = int(np.argmax(val["diffmean"] if "diffmean" in val else next(iter(val.values()))))
    lo = min(max(best - config.n_steer_layers // 2, 0), n_layers - config.n_steer_layers)
    return list(range(lo, lo + config.n_steer_layers))


# ---------------------------------------------------------------------------------- steering
def _statement_positions(lm: Any, statements: list[str]) -> list[list[int]]:
    """Indices (in each prompt's own tokens) of each statement's last tokens, checked."""
    from interplab.interventions.prompts import TAIL

    out = []
    for s in statements:
        st = lm.tokenizer(s, add_special_tokens=False)["input_ids"]
        full = lm.tokenizer(s + TAIL, add_special_tokens=False)["input_ids"]
        if full[: len(st)] != st:
            raise InterplabError(f"the statement {s!r} tokenises differently before the prompt's "
                                 "tail; cannot locate its final tokens")
        out.append(len(st))
    return out


def _steer(lm: Any, config: CausalConfig, prefix: str, statements: list[str], labels: np.ndarray,
           directions: dict[str, np.ndarray], layers: list[int], metric: Any,
           neutral: list[str]) -> dict[str, Any]:
    from interplab.activations import Positions
    from interplab.interventions import steer_many
    from interplab.interventions.prompts import TAIL

    ends = _statement_positions(lm, statements)
    pos = Positions.explicit([list(range(e - config.steer_tokens, e)) for e in ends])
    dirs = {name: {f"blocks.{layer}.hook_resid_post": d[layer] for layer in layers}
            for name, d in directions.items()}
    signs = np.where(labels == 1, -1.0, 1.0)  # false → towards TRUE, true → towards FALSE
    results = steer_many(lm, [s + TAIL for s in statements], dirs, config.doses, metric,
                         positions=pos, prefix=prefix, signs=signs, n_null=config.n_null,
                         neutral_texts=neutral, batch_size=config.batch_size,
                         n_boot=config.n_boot, seed=config.seed)
    return {name: r.to_dict() for name, r in results.items()}


def _comparison(steering: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per probe at the null's dose; its test against the null (raw ``p``, ``k``, ``z``,
    ``at_floor``, and after :func:`_statistics` the corrected ``q``, ``q_bound``, ``verdict``)."""
    rows = []
    for name, r in steering.items():
        s, null, side = r["summary"], r["null"], r["side_effects"]
        k = r["doses"].index(null["dose"])
        rows.append({"probe": name, "label": PROBE_LABELS.get(name, name), "dose": null["dose"],
                     "effect": s["mean"][k], "lo": s["lo"][k], "hi": s["hi"][k],
                     "slope": s["slope"], "slope_lo": s["slope_lo"], "slope_hi": s["slope_hi"],
                     "wrong_way": s["wrong_way"], "null_mean": null["mean"],
                     "null_sd": null["sd"], "null_max": max(null["values"]),
                     "percentile": null["percentile"], "kl": side["kl_mean"][k],
                     "delta_ce": side["delta_ce"][k] if side["delta_ce"] else None,
                     **{key: null[key] for key in ("p", "k", "z", "at_floor")}})
    return rows


def _statistics(steering: dict[str, dict[str, Any]], comparison: list[dict[str, Any]],
                patching: dict[str, Any]) -> dict[str, Any]:
    """Every p-value the study emits (each probe's steering effect and each patched node tested
    against its random-direction null) corrected as one family (Benjamini–Hochberg,
    :func:`interplab.controls.correct_family`); ``q``, ``q_bound`` and ``verdict`` are written
    into each tested cell as well."""
    from interplab.controls.multiple import correct_cells

    cells: list[tuple[str, Any, float | None]] = []
    for row in comparison:
        cells.append((f"steer {row['probe']}", [row, steering[row["probe"]]["null"]],
                      row["effect"]))
    pnull = patching["result"]["null"]
    for node in (pnull or {}).get("nodes", {}).values():
        offsets = ",".join(str(o) for o in node["positions"])
        cells.append((f"patch {node['hook']} @{offsets}", node, node["effect"]))
    family = correct_cells(cells)
    out = family.to_dict()
    out["family"] = ("every p-value of this study: each probe direction's steering effect and "
                     "each patched node of the null, each against its norm-matched random "
                     "directions (two-sided)")
    return out


# ---------------------------------------------------------------------------------- patching
def _patch_pairs(lm: Any, sub: Any, test: np.ndarray, n: int, seed: int
                 ) -> tuple[list[str], list[str], int]:
    """(true statement, false statement) about the same city with equal token counts.

    Both claims of a city are drawn from the full dataset, restricted to the entity groups of
    the test split (a group is on one side only, so no statement here was trained on)."""
    from interplab.datasets import load_dataset
    from interplab.interventions.prompts import TAIL

    ds = load_dataset("cities", seed=seed)
    groups = set(np.asarray(sub.groups)[test].tolist())
    rows = np.flatnonzero(np.isin(np.asarray(ds.groups), list(groups)))
    city = np.asarray(ds.metadata["city"])
    by_city: dict[str, dict[int, int]] = {}
    for i in rows:
        by_city.setdefault(str(city[i]), {})[int(ds.labels[i])] = int(i)
    clean, corrupt, skipped = [], [], 0
    for c in np.random.default_rng((seed, 3)).permutation(sorted(by_city)):
        pair = by_city[c]
        if len(pair) < 2:
            continue
        t, f = ds.statements[pair[1]] + TAIL, ds.statements[pair[0]] + TAIL
        if len(lm.tokenizer(t)["input_ids"]) != len(lm.tokenizer(f)["input_ids"]):
            skipped += 1
            continue
        clean.append(t)
        corrupt.append(f)
        if len(clean) == n:
            break
    if len(clean) < 2:
        raise InterplabError("fewer than 2 city statement pairs with equal token counts; raise "
                             "--max-per-dataset")
    return clean, corrupt, skipped


def _patch(lm: Any, config: CausalConfig, prefix: str, clean: list[str], corrupt: list[str],
           metric: Any) -> dict[str, Any]:
    from interplab.interventions import patch

    layers = list(range(0, lm.n_layers, config.patch_layer_stride))
    if layers[-1] != lm.n_layers - 1:
        layers.append(lm.n_layers - 1)
    offsets = list(range(-config.patch_tokens, 0))
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    r = patch(lm, clean, corrupt, hooks, metric, positions=offsets, prefix=prefix,
              n_null=config.n_null, null_nodes=3, batch_size=config.batch_size,
              n_boot=config.n_boot, seed=config.seed)
    from interplab.controls import bootstrap_statistic

    grid = np.asarray(r.summary["mean"]).reshape(len(layers), len(offsets))
    gaps = np.asarray(r.info["donor_metric"]) - np.asarray(r.info["receiver_metric"])
    gap = bootstrap_statistic(np.mean, gaps, n_boot=config.n_boot, seed=config.seed)
    ids = lm.tokenizer(clean[0], add_special_tokens=False)["input_ids"]
    tokens = [lm.tokenizer.decode([i]) for i in ids[-config.patch_tokens:]]
    return {"result": r.to_dict(), "layers": layers, "offsets": offsets, "grid": grid.tolist(),
            "gap": {"mean": gap[0], "lo": gap[1], "hi": gap[2],
                    "pairs_with_true_higher": float(np.mean(gaps > 0))},
            "tokens_of_first_pair": [str(t) for t in tokens],
            "fraction_grid": (grid / r.info["mean_gap"]).tolist() if r.info["mean_gap"] else None}


def _attribute(lm: Any, config: CausalConfig, prefix: str, clean: list[str], corrupt: list[str],
               metric: Any) -> dict[str, Any]:
    from interplab.interventions import attribute

    layers = config.attribution_layers(lm.n_layers)
    hooks = [f"blocks.{layer}.{k}" for layer in layers
             for k in ("hook_resid_post", "hook_attn_out", "hook_mlp_out")]
    r = attribute(lm, clean[: config.attr_pairs], corrupt[: config.attr_pairs], hooks, metric,
                  positions=list(range(-config.attr_tokens, 0)), prefix=prefix,
                  ig_steps=config.ig_steps, n_exact=config.n_exact,
                  batch_size=config.batch_size, seed=config.seed)
    rule = ("as given (--attr-layers)" if config.attr_layers is not None else
            "five blocks spread evenly, ⌊(i + ½)·L/5⌋")
    return {**r.to_dict(), "layers": layers, "layers_rule": rule}


# ---------------------------------------------------------------------------------- findings
def _steer_findings(comparison: list[dict[str, Any]], layers: list[int], answers: dict
                    ) -> list[str]:
    out = []
    span = f"layers {layers[0]}–{layers[-1]}" if len(layers) > 1 else f"layer {layers[0]}"
    metric = f"P({answers['true']!r}) − P({answers['false']!r})"
    for row in comparison:
        verdict = _verdict_text(row)
        out.append(
            f"{row['label']}: adding its direction at {span} (dose {row['dose']:g} class-mean "
            f"gaps) moved {metric} by {row['effect']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}] "
            f"in the intended direction; norm-matched random directions moved it by "
            f"{row['null_mean']:+.3f} ± {row['null_sd']:.3f} (largest {row['null_max']:+.3f}): "
            f"{verdict}. Slope {row['slope']:+.3f} per gap [{row['slope_lo']:+.3f}, "
            f"{row['slope_hi']:+.3f}]; {100 * row['wrong_way']:.0f}% of statements moved the "
            f"wrong way; KL at the answer {row['kl']:.3f} nats.")
    causal = [r["label"] for r in comparison if r["verdict"] == "above the null" and r["lo"] > 0]
    out.append("No probe direction has a causal effect beyond the null after correction."
               if not causal else
               f"Causal beyond the null (effect interval above 0 and above the random-direction "
               f"null after correction): {', '.join(causal)}.")
    by = {r["probe"]: r for r in comparison}
    if "diffmean" in by and "logistic" in by:
        a, b = by["diffmean"], by["logistic"]
        overlap = a["lo"] <= b["hi"] and b["lo"] <= a["hi"]
        rel = ("larger than" if a["effect"] > b["effect"] else "smaller than")
        out.append(f"Mass-mean vs logistic (the paper found mass-mean more causally implicated): "
                   f"mass-mean's effect {a['effect']:+.3f} is {rel} logistic's "
                   f"{b['effect']:+.3f}" + ("; their intervals overlap, so this run does not "
                                            "separate them." if overlap else
                                            "; their intervals do not overlap."))
    return out


def _verdict_text(row: dict[str, Any]) -> str:
    """A tested cell's corrected verdict, with its q-value and the raw p beside it."""
    from interplab.controls import format_p

    q = format_p(row["q"], at_floor=row["q_bound"], name="q")
    raw = format_p(row["p"], at_floor=row["at_floor"], k=row["k"])
    words = {"above the null": "beyond the random-direction null, in the intended direction",
             "below the null": "beyond the random-direction null, the wrong way",
             "not significant": "not beyond the random-direction null"}
    return f"{words.get(row['verdict'], row['verdict'])} after correction ({q}; {raw} uncorrected)"


def _patch_null_findings(p: dict[str, Any]) -> list[str]:
    null = p["result"]["null"]
    if not null or not null.get("nodes"):
        return []
    parts = [f"{node['hook']} at offset(s) {','.join(map(str, node['positions']))} "
             f"({node['effect']:+.3f}): {_verdict_text(node)}" for node in null["nodes"].values()]
    return ["Patching's strongest nodes against random directions of the patch's norm: "
            + "; ".join(parts) + "."]


def _patch_findings(p: dict[str, Any]) -> list[str]:
    frac = p["fraction_grid"]
    if frac is None:
        return ["Patching: true and false statements gave the same answer score on average, so "
                "no fraction of it can be restored."]
    grid = np.asarray(frac)
    li, pi = np.unravel_index(np.argmax(grid), grid.shape)
    tok = p["tokens_of_first_pair"]
    first_last = [int(np.argmax(grid[:, j])) for j in range(grid.shape[1])]
    last_col = grid[:, -1]
    late = next((p["layers"][i] for i, v in enumerate(last_col) if v >= 0.5), None)
    g = p["gap"]
    out = [f"Patching clean (true) into corrupted (false) city statements: the score is higher "
           f"for the true statement by {g['mean']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}] "
           f"({100 * g['pairs_with_true_higher']:.0f}% of pairs)"
           + ("; a gap this small makes the fractions below noisy (they can exceed 100%)."
              if g["lo"] <= 0 or abs(g["mean"]) < 0.05 else ".")
           + f" The single node restoring most of it is layer {p['layers'][li]} at token "
           f"{tok[pi]!r} (offset {p['offsets'][pi]}), {100 * grid[li, pi]:.0f}%."]
    share = float(np.mean(last_col >= 0.5))
    out.append("At the final token, patching first restores half the gap or more "
               + (f"at layer {late} ({100 * share:.0f}% of the layers swept reach half)."
                  if late is not None else "at no layer swept."))
    peaks = ", ".join(f"{tok[j]!r}: layer {p['layers'][first_last[j]]}"
                      for j in range(len(tok)) if grid[:, j].max() >= 0.2)
    if peaks:
        out.append(f"Where each token matters most (≥ 20% restored somewhere): {peaks}.")
    return out


def _attr_findings(a: dict[str, Any]) -> list[str]:
    out = []
    for kind, row in a["agreement"].items():
        if kind == "all":
            continue
        parts = [f"{m.upper() if m == 'ig' else 'AtP'} Spearman "
                 + (f"{v['spearman']:.2f}" if v["spearman"] is not None else "n/a")
                 + f", top-{v['k']} overlap {v['top_k_overlap']:.2f}" for m, v in row.items()]
        out.append(f"{kind}: " + "; ".join(parts) + f" (vs exact patching, {next(iter(row.values()))['n_nodes']} nodes).")
    out.append(f"Cost in forward passes: AtP {a['cost'].get('atp', float('nan')):.1f}, IG("
               f"{a['info']['ig_steps']}) {a['cost'].get('ig', float('nan')):.1f}, exact "
               f"patching of every node ≈ {a['cost']['exact_all_nodes_estimate']:.0f}.")
    return out


# ---------------------------------------------------------------------------------- the run
def _neutral_texts(lm: Any, config: CausalConfig) -> list[str]:
    from interplab.datasets.corpus import load_corpus

    docs = load_corpus("kjv").documents
    pick = np.random.default_rng((config.seed, 4)).choice(len(docs), config.n_neutral,
                                                          replace=False)
    out = []
    for i in pick:
        ids = lm.tokenizer(docs[int(i)][: 8 * config.neutral_tokens], add_special_tokens=False)["input_ids"]
        out.append(lm.tokenizer.decode(ids[: config.neutral_tokens]))
    return out


def _harvest(lm: Any, datasets: dict, batch_size: int) -> dict[str, np.ndarray]:
    import torch

    from interplab.activations import harvest

    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(lm.n_layers)]
    out = {}
    for name, ds in datasets.items():
        acts = harvest(lm, ds.statements, hooks, "last", batch_size=batch_size, progress=False)
        out[name] = torch.stack([acts[h] for h in hooks]).float().numpy()  # [L, n, d]
    return out


def run_causal(config: CausalConfig, *, console: Console | None = None) -> CausalResult:
    """Run the causal study described by ``config``; returns the result."""
    from interplab.interventions import ProbDiff
    from interplab.interventions.prompts import (
        TAIL,
        answer_tokens,
        check_prompts_fit,
        held_out_rows,
    )
    from interplab.models import load
    from interplab.study.result import versions as _versions

    config.validate()
    console = console or Console(stderr=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    datasets, splits = _datasets(config)
    lm = load(config.model, device=config.device)
    config.check_layers(lm.n_layers)
    answers = answer_tokens(lm, config.answer_true, config.answer_false)
    metric = ProbDiff(answers["true_id"], answers["false_id"])
    cities, test = datasets["cities"], splits["cities"].test
    rows = held_out_rows(cities, test, config.n_prompts, config.seed)
    statements = [cities.statements[i] for i in rows]
    clean, corrupt, skipped = _patch_pairs(lm, cities, test, config.patch_pairs, config.seed)
    prefix = check_prompts_fit(lm, cities, splits["cities"].train, answers, config.n_shots,
                               config.seed, [s + TAIL for s in statements] + clean + corrupt)
    timings["load_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    acts = _harvest(lm, datasets, config.batch_size)
    directions, val, gap = _fit_probes(config, datasets, splits, acts)
    layers = _steer_window(config, val, lm.n_layers)
    timings["probes_s"] = time.perf_counter() - t
    console.print(f"probes fitted in {timings['probes_s']:.0f} s; steering layers {layers}")

    t = time.perf_counter()
    steering = _steer(lm, config, prefix, statements, cities.labels[rows], directions, layers,
                      metric, _neutral_texts(lm, config))
    comparison = _comparison(steering)
    timings["steer_s"] = time.perf_counter() - t
    console.print(f"steering done in {timings['steer_s']:.0f} s")

    t = time.perf_counter()
    patching = _patch(lm, config, prefix, clean, corrupt, metric)
    timings["patch_s"] = time.perf_counter() - t
    console.print(f"patching done in {timings['patch_s']:.0f} s")
    t = time.perf_counter()
    attribution = _attribute(lm, config, prefix, clean, corrupt, metric)
    timings["attribute_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    statistics = _statistics(steering, comparison, patching)
    findings = (_steer_findings(comparison, layers, answers) + _patch_findings(patching)
                + _patch_null_findings(patching) + _attr_findings(attribution))
    notes = [f"Answer tokens: {answers['true']!r} (id {answers['true_id']}) and "
             f"{answers['false']!r} (id {answers['false_id']}), the first single-token "
             f"spellings among {config.answer_true} / {config.answer_false}.",
             f"{skipped} city pairs were skipped for patching because the true and false "
             "country have different token counts.",
             f"Multiple comparisons: the {statistics['m']} p-values of this study (steering per "
             f"probe, patching's null nodes) are corrected together with Benjamini–Hochberg at "
             f"a false discovery rate of {statistics['alpha']:g}; verdicts read the corrected "
             f"q-values. With {config.n_null} random directions a p-value's floor is "
             f"1/{config.n_null + 1} = {1 / (config.n_null + 1):.4f}; a test at that floor gets "
             f"q = {statistics['floor_q_alone']:.3g} when no other test is significant."]
    notes += attribution.get("warnings", [])
    data = {"answers": answers, "prefix": prefix, "prompt_example": prefix + statements[0] + TAIL,
            "steered_rows": rows.tolist(), "steered_labels": cities.labels[rows].tolist(),
            "n_train": {n: int(len(s.train)) for n, s in splits.items()},
            "n_test_cities": int(len(test)), "split_rule": splits["cities"].rule,
            "patch_pairs": [[c, x] for c, x in zip(clean, corrupt, strict=True)]}
    probes = {"steer_layers": layers, "validation_accuracy": val, "gap_norm": gap.tolist(),
              "trained_on": "cities + neg_cities training split, per-dataset centring, "
                            "last statement token, resid_post",
              "scaling": "each direction scaled to the class-mean gap ‖μ_true − μ_false‖ of its "
                         "layer; dose 1 = one gap at every steered layer"}
    return CausalResult(config=asdict(config), versions=_versions(), model=lm.identity(),
                        data=data, probes=probes, steering=steering, comparison=comparison,
                        patching=patching, attribution=attribution, findings=findings,
                        notes=notes, timings=timings, statistics=statistics)
