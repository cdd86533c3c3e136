"""The truth study: do activations linearly represent whether a statement is true?

Data flow: statement datasets → checks that every split can support the study (before any model
is run) → last-token residual stream at every layer (+ each statement's log-probability, same
pass) for the model and for its weight-permuted reset copy, cached on disk → per training set,
layer and probe: a fit on the train split, the layer chosen on the validation split, accuracy on
the test split and on every other dataset with bootstrap CIs, beside the shuffled-label,
random-direction and reset-network controls and a log-probability baseline → graded verdicts
(binomial tests, Benjamini–Hochberg) and a summary → a JSON-serialisable :class:`TruthResult`
(the report draws it).

Splits are by entity (the city, the word, the number pair) so no subject is on both sides. A
dataset outside a training set is scored on all its rows, except the negation twins of that
training set's training rows (they restate a training claim).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

import interplab
from interplab.controls.nulls import NULLS
from interplab.errors import InterplabError
from interplab.progress import LineProgress, progress_display
from interplab.studies.config import JsonResult
from interplab.threads import AdaptiveThreads, limit_threads, resolve_threads

DEFAULT_DATASETS = [
    "cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans",
    "larger_than", "smaller_than", "cities_conj", "cities_disj",
]
DEFAULT_TRAIN_SETS = [["cities"], ["cities", "neg_cities"], ["larger_than"], ["sp_en_trans"]]
DEFAULT_PCA_PAIRS = [["cities", "neg_cities"], ["larger_than", "smaller_than"]]
CONTROLS = ("shuffled", "random", "reset")
SPLIT_PARTS = ("train", "val", "test")
TOKENS = "last token of each statement, blocks.{layer}.hook_resid_post (before the final norm)"
# How each probe is named in summaries and in the report.
PROBE_LABELS = {"diffmean": "mass-mean", "lda": "LDA", "massmean-iid": "mass-mean iid",
                "logistic": "logistic", "ccs": "CCS"}


def is_pair_probe(name: str) -> bool:
    """Whether the registered probe ``name`` trains on statement/negation pairs (e.g. CCS)."""
    from interplab.probes import PROBES, PairProbe

    return issubclass(PROBES[name], PairProbe)


def _label(probe: str) -> str:
    return PROBE_LABELS.get(probe, probe)


@dataclass
class TruthConfig:
    """Everything that defines a truth-study run (saved with the result)."""

    model: str = field(default="smollm2-135m", metadata={
        "help": "Registry name, HF folder or .gguf."})
    datasets: list[str] = field(default_factory=lambda: list(DEFAULT_DATASETS), metadata={
        "help": "Dataset names or .csv paths, comma-separated."})
    train_sets: list[list[str]] = field(
        default_factory=lambda: [list(t) for t in DEFAULT_TRAIN_SETS], metadata={
            "help": "A training set (repeat the option); join datasets with '+' to mix them."})
    layers: list[int] | None = field(default=None, metadata={
        "help": "Block indices, comma-separated (default: every block)."})
    probes: list[str] = field(default_factory=lambda: ["diffmean", "lda", "logistic", "ccs"],
                              metadata={"help": "Probes, comma-separated."})
    controls: list[str] = field(default_factory=lambda: list(CONTROLS), metadata={
        "help": "Any of shuffled,random,reset (or 'none')."})
    max_per_dataset: int | None = field(default=600, metadata={
        "help": "Statements per dataset, balanced by label (0 or none: no limit)."})
    split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2], metadata={
        "help": "Train,validation,test fractions (split by entity)."})
    centering: str = field(default="per-dataset", metadata={
        "help": "per-dataset | train | none."})
    # How statements of twin datasets (cities / neg_cities) are matched: "auto" (pair ids when
    # both have them, else row order when the files are aligned), "row", or a CSV column name.
    pair_by: str = field(default="auto", metadata={
        "help": "Match twin datasets (cities/neg_cities): auto (pair ids, else aligned rows), "
        "row, or a CSV column name."})
    group_column: str | None = field(default=None, metadata={
        "help": "CSV column naming each row's entity (for the split)."})
    seed: int = field(default=0, metadata={"help": "Seed of the split, probes and controls."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples of each interval."})
    n_shuffles: int = field(default=5, metadata={
        "help": "Shuffled-label fits averaged per probe."})
    batch_size: int = field(default=64, metadata={"help": "Statements per forward pass."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda[:N] (default: auto)."})
    pca_pairs: list[list[str]] = field(
        default_factory=lambda: [list(p) for p in DEFAULT_PCA_PAIRS], metadata={
            "help": "Dataset pairs of the PCA figure, joined with '+' (repeat the option)."})
    erasure_nulls: bool = field(default=False, metadata={
        "help": "Add an erasure and null section: at the first training set's chosen layer, "
        "LEACE checked held out beside a same-rank random subspace, and each probe against each "
        "null source of --nulls, method − null with a CI."})
    nulls: list[str] = field(default_factory=lambda: list(NULLS), metadata={
        "help": "Null sources of the erasure and null section: gaussian, gaussian-mixture, "
        "hypercube (no model pass); shuffled-tokens, layer0, reset, random-init (one harvest "
        "each of that training set's train and test statements, at the chosen layer only)."})

    def validate(self) -> None:
        from interplab.probes import CENTERINGS, PROBES

        if not self.datasets:
            raise InterplabError("no datasets given; name at least one (e.g. cities)")
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise InterplabError(f"unknown probe(s) {unknown}; choose from {list(PROBES)}")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise InterplabError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")
        if self.centering not in CENTERINGS:
            raise InterplabError(f"centering must be one of {CENTERINGS}")
        names = {_short_name(d) for d in self.datasets}
        for ts in self.train_sets:
            missing = [d for d in ts if _short_name(d) not in names]
            if missing:
                raise InterplabError(
                    f"training set {ts} uses {missing}, which is not among the datasets "
                    f"{sorted(names)}; add it to the datasets"
                )
        if (len(self.split) != 3 or min(self.split) <= 0
                or abs(sum(self.split) - 1) > 1e-6):
            raise InterplabError(
                f"split must be three positive fractions (train, validation, test) summing to 1, "
                f"got {self.split}; e.g. 0.6,0.2,0.2")
        if self.n_shuffles < 1:
            raise InterplabError("n_shuffles must be at least 1")
        bad = [n for n in self.nulls if n not in NULLS]
        if bad:
            raise InterplabError(f"unknown null(s) {bad}; choose from {', '.join(NULLS)}")
        if self.layers is not None and any(layer < 0 for layer in self.layers):
            raise InterplabError(f"layers must be non-negative block indices, got {self.layers}")


@dataclass
class TruthResult(JsonResult):
    """A truth-study result: config, metrics with their controls, counts, seeds and versions."""

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    reset_model: dict[str, Any] | None
    datasets: list[dict[str, Any]]
    layers: list[int]
    probes: list[str]
    train_sets: list[str]
    test_sets: list[str]
    # accuracy[train][probe][variant] = {"value": [L][T], "lo": [L][T], "hi": [L][T], "n": [T]}
    # on the rows ``scored[train][test]`` describes
    accuracy: dict[str, dict[str, dict[str, dict[str, Any]]]]
    # heldout[train][probe][variant] = {"value": [L], "lo": [L], "hi": [L], "n"}: the training
    # datasets' own test splits pooled (the in-distribution number), at every layer
    heldout: dict[str, dict[str, dict[str, dict[str, Any]]]]
    # validation[train][probe] = {"value": [L], "n"}: pooled validation splits (chooses the layer)
    validation: dict[str, dict[str, dict[str, Any]]]
    best_layer: dict[str, dict[str, int]]
    # scored[train][test] = {"rows": "test split" | "all rows", "n", "twins_left_out"}
    scored: dict[str, dict[str, dict[str, Any]]]
    method: dict[str, Any]  # split rule, centring, tokens, layer selection, multiple comparisons
    verdicts: list[dict[str, Any]]  # one row per (train, probe, test) at the chosen layer
    control_checks: list[dict[str, Any]]  # controls that are off, each with a comment
    summary: list[str]  # the answer, in a few sentences
    likelihood: dict[str, Any]
    pca: dict[str, Any]
    notes: list[str]
    timings: dict[str, float]
    # with config.erasure_nulls: {"train_set", "layer", "erasure": {...}, "nulls": {...}}
    # (see interplab.studies.truth_erasure); None when off and in older result files
    erasure_nulls: dict[str, Any] | None = None

    # convenience accessors used by the report and tests
    def acc(self, train: str, probe: str, variant: str, layer: int, test: str) -> dict[str, float]:
        entry = self.accuracy[train][probe][variant]
        li, ti = self.layers.index(layer), self.test_sets.index(test)
        return {"value": entry["value"][li][ti], "lo": entry["lo"][li][ti],
                "hi": entry["hi"][li][ti], "n": entry["n"][ti]}


def _short_name(spec: str) -> str:
    return Path(spec).stem if spec.lower().endswith(".csv") else spec


def _train_key(names: list[str]) -> str:
    return "+".join(_short_name(n) for n in names)


def _versions() -> dict[str, str]:
    import sklearn
    import torch
    import transformers

    return {"interplab": interplab.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------- datasets
def _load_one(spec: str, config: TruthConfig) -> Any:
    from interplab.datasets import load_csv, load_dataset

    if not spec.lower().endswith(".csv"):
        return load_dataset(spec, seed=config.seed)
    kwargs: dict[str, Any] = {}
    if config.pair_by not in ("auto", "row"):
        kwargs["pair_col"] = config.pair_by
    if config.group_column:
        kwargs["group_col"] = config.group_column
    return load_csv(spec, **kwargs)


def _twin_couples(names: list[str]) -> list[tuple[str, str]]:
    """(affirmative, negated) couples of datasets both present in the run."""
    from interplab.datasets import NEGATION_TWINS

    return [(a, b) for a, b in NEGATION_TWINS.items() if a in names and b in names]


def _aligned(a: Any, b: Any) -> bool:
    return len(a) == len(b) and bool((a.labels != b.labels).all())


def _pair_twins(datasets: dict[str, Any], config: TruthConfig, notes: list[str]) -> None:
    """Give twin datasets pair ids by row order where asked for (or, under "auto", aligned)."""
    for a, b in _twin_couples(list(datasets)):
        da, db = datasets[a], datasets[b]
        by_row = config.pair_by == "row" or (
            config.pair_by == "auto" and (da.pair_ids is None or db.pair_ids is None)
            and _aligned(da, db))
        if config.pair_by == "row" and not _aligned(da, db):
            raise InterplabError(
                f"--pair-by row: {a} ({len(da)} rows) and {b} ({len(db)} rows) are not aligned "
                "(same length, opposite label on every row); give them a shared pair-id column "
                "and pass --pair-by COLUMN")
        if by_row:
            ids = np.array([f"row{i}" for i in range(len(da))])
            datasets[a], datasets[b] = replace(da, pair_ids=ids), replace(db, pair_ids=ids)
            if config.pair_by == "auto":
                notes.append(f"{a} and {b} have no pair ids; they are aligned (same length, "
                             "opposite labels row by row), so row i of one was paired with "
                             "row i of the other.")


def _twin_rows(datasets: dict[str, Any], a: str, b: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Aligned row indices of the statements ``a`` and ``b`` share, or None if unknown."""
    from interplab.datasets import paired

    try:
        return paired(datasets[a], datasets[b])
    except InterplabError:
        return None


def _split_one(ds: Any, config: TruthConfig) -> Any:
    from interplab.datasets import entity_split

    # Sizes are checked afterwards, for training datasets only (a target may be small).
    return entity_split(ds, tuple(config.split), seed=config.seed, min_per_class=0)


def _make_splits(datasets: dict[str, Any], config: TruthConfig) -> dict[str, Any]:
    """Split every dataset by entity; a negated twin follows its affirmative's split row for row,
    so a mixed training set (cities + neg_cities) never has a claim in train and its negation in
    test (entity_split already does this when both carry the same groups)."""
    from interplab.datasets import Split

    splits = {name: _split_one(ds, config) for name, ds in datasets.items()}
    for a, b in _twin_couples(list(datasets)):
        rows = _twin_rows(datasets, a, b)
        if rows is None:
            continue
        part_of = np.empty(len(datasets[b]), dtype=object)
        for p, idx in splits[b].sides().items():
            part_of[idx] = p
        before = part_of.copy()
        where_a = {int(i): p for p, idx in splits[a].sides().items() for i in idx}
        for ia, ib in zip(*rows, strict=True):
            part_of[ib] = where_a[int(ia)]
        if (part_of != before).any():
            splits[b] = Split(*(np.flatnonzero(part_of == p) for p in SPLIT_PARTS),
                              rule=f"{splits[b].rule}; twins of {a} rows moved to their side",
                              fractions=splits[b].fractions)
    return splits


def _check_sizes(config: TruthConfig, datasets: dict[str, Any], splits: dict[str, Any]) -> None:
    """Refuse, before harvesting, a training dataset whose splits are too small to use."""
    from interplab.datasets import check_split_sizes

    for name in sorted({_short_name(n) for ts in config.train_sets for n in ts}):
        check_split_sizes(datasets[name], splits[name])


def _check_pairs(config: TruthConfig, datasets: dict[str, Any]) -> None:
    """Pair probes (CCS) need statement/negation pairs: refuse before harvesting if they cannot
    be formed."""
    paired = [p for p in config.probes if is_pair_probe(p)]
    if not paired:
        return
    for a, b in _twin_couples(list(datasets)):
        in_train = any(n in (a, b) for ts in config.train_sets for n in map(_short_name, ts))
        if in_train and _twin_rows(datasets, a, b) is None:
            raise InterplabError(
                f"the {'/'.join(map(_label, paired))} probe needs statement/negation pairs, but "
                f"{a} and {b} share no pair ids and are not aligned row by row; add a shared "
                f"'pair_id' column (or pass --pair-by COLUMN), or leave {', '.join(paired)} out "
                "of --probes")


def _load_datasets(config: TruthConfig, notes: list[str]) -> tuple[dict, dict[str, Any]]:
    datasets = {_short_name(spec): _load_one(spec, config) for spec in config.datasets}
    _pair_twins(datasets, config, notes)
    if config.max_per_dataset:  # twins keep their alignment (same seed and quotas)
        datasets = {n: ds.balanced_subsample(config.max_per_dataset, seed=config.seed)
                    if config.max_per_dataset < len(ds) else ds for n, ds in datasets.items()}
    _check_pairs(config, datasets)
    splits = _make_splits(datasets, config)
    _check_sizes(config, datasets, splits)
    return datasets, splits


def _scored_rows(names: list[str], datasets: dict, splits: dict[str, Any]
                 ) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Rows of every dataset scored for a probe trained on ``names``, with a description.

    A training dataset is scored on its test split. Any other dataset is untouched by this probe
    and scored on all its rows, except the negation twins of training rows (they restate, negated,
    a claim the probe was fitted on).
    """
    out = {}
    for test, ds in datasets.items():
        if test in names:
            rows = splits[test].test
            out[test] = (rows, {"rows": "test split", "n": len(rows), "twins_left_out": 0})
            continue
        keep = np.ones(len(ds), dtype=bool)
        for a, b in _twin_couples(list(datasets)):
            if test not in (a, b) or (b if test == a else a) not in names:
                continue
            other = b if test == a else a
            rows = _twin_rows(datasets, a, b)
            if rows is None:
                continue
            mine, theirs = (rows[0], rows[1]) if test == a else (rows[1], rows[0])
            keep[mine[np.isin(theirs, splits[other].train)]] = False
        rows = np.flatnonzero(keep)
        out[test] = (rows, {"rows": "all rows", "n": len(rows),
                            "twins_left_out": int(len(ds) - len(rows))})
    return out


# ---------------------------------------------------------------------------------- harvest
def _cache_path(cache_dir: Path, identity: dict, ds: Any, layers: list[int],
                with_logprobs: bool, tokens: str = TOKENS) -> Path:
    key = json.dumps({"model": identity, "dataset": ds.content_hash, "layers": layers,
                      "tokens": tokens, "logprobs": with_logprobs}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir / f"{ds.name}-{digest}.safetensors"


# Statements of several datasets go through one harvest call (up to this many per call), so the
# harvest's length sorting pads less than it would dataset by dataset.
HARVEST_GROUP = 2048


def _cached(path: Path | None, ds: Any, layers: list[int]) -> tuple | None:
    """``(X [L, n, d], logprob [n] | None)`` from the cache file, or None if it is not usable."""
    from safetensors.numpy import load_file

    if path is None or not path.is_file():
        return None
    try:
        t = load_file(str(path))
        if t["acts"].shape[:2] == (len(layers), len(ds)):
            return t["acts"], t.get("logprob")
    except Exception:  # noqa: BLE001 - a damaged cache file is re-harvested, not fatal
        pass
    return None


def _save_cache(path: Path, X: np.ndarray, lp: np.ndarray | None) -> None:
    from safetensors.numpy import save

    from interplab.fileio import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"acts": np.ascontiguousarray(X)}
    if lp is not None:
        tensors["logprob"] = np.ascontiguousarray(lp)
    atomic_write_bytes(path, save(tensors))


def _harvest_group(lm: Any, group: list[Any], layers: list[int], batch_size: int,
                   with_logprobs: bool, threads: int | None, positions: Any = "last"
                   ) -> list[tuple]:
    """resid_post ``[L, n, d]`` and log-probabilities of each dataset in ``group``, harvested in
    one call over all their statements.

    One row per text: the last token by default; with ``positions`` selecting several tokens of
    a text (e.g. ``Positions.explicit``, for a group of one dataset), their mean."""
    import torch

    from interplab.activations import harvest
    from interplab.models import HookPoint

    hooks = [HookPoint.resid_post(layer) for layer in layers]
    n = sum(len(ds) for ds in group)
    acts = harvest(lm, [s for ds in group for s in ds.statements], hooks, positions,
                   batch_size=batch_size, with_logprobs=with_logprobs, progress=False,
                   threads=threads)
    X = torch.stack([acts[h] for h in hooks]).float().numpy()  # [L, rows, d]
    if X.shape[1] != n:  # several tokens per text: their mean
        text = acts.text_index.numpy()
        X = np.stack([np.add.reduceat(x, np.flatnonzero(np.r_[True, text[1:] != text[:-1]]))
                      for x in X]) / np.bincount(text, minlength=n)[None, :, None]
    lp = acts.text_logprob.float().numpy() if with_logprobs else None
    ends = np.cumsum([len(ds) for ds in group])
    return [(X[:, a:b], None if lp is None else lp[a:b])
            for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _harvest_all(lm: Any, datasets: dict, layers: list[int], batch_size: int,
                 progress: Progress | LineProgress, label: str, cache_dir: Path | None,
                 with_logprobs: bool = True, threads: int | None = None, tokens: str = TOKENS,
                 positions_of: Any = None) -> tuple[dict[str, tuple], int]:
    """Per dataset ``(X [L, n, d], logprob [n] | None)``; also how many came from the cache.

    ``positions_of(ds)`` (default: the last token) selects the tokens averaged per text; such
    datasets are harvested one per call, since their positions are their own."""
    from interplab.models.loading import weights_sha256

    task = progress.add_task(f"harvest ({label})", total=len(datasets))
    # The cache key names the weights themselves (not only the model's name and config), so
    # changed weights saved under the same name are harvested again, never read from the cache.
    identity = {**lm.identity(), "weights_sha256": weights_sha256(lm.hf)} if cache_dir else None
    paths = {name: _cache_path(cache_dir, identity, ds, layers, with_logprobs, tokens)
             if cache_dir else None for name, ds in datasets.items()}
    out: dict[str, tuple] = {}
    for name, ds in datasets.items():
        hit = _cached(paths[name], ds, layers)
        if hit is not None:
            out[name] = hit
            progress.advance(task)
    reused = len(out)
    groups: list[list[str]] = []
    for name in (n for n in datasets if n not in out):
        full = groups and sum(len(datasets[n]) for n in groups[-1]) >= HARVEST_GROUP
        if not groups or full or positions_of is not None:
            groups.append([])
        groups[-1].append(name)
    for names in groups:
        positions = positions_of(datasets[names[0]]) if positions_of else "last"
        parts = _harvest_group(lm, [datasets[n] for n in names], layers, batch_size,
                               with_logprobs, threads, positions)
        for name, (X, lp) in zip(names, parts, strict=True):
            out[name] = (X, lp)
            if paths[name] is not None:
                _save_cache(paths[name], X, lp)
            progress.advance(task)
    return {name: out[name] for name in datasets}, reused




# ---------------------------------------------------------------------------------- the run
def run_truth(config: TruthConfig, *, progress: bool = True, console: Console | None = None,
              cache_dir: str | Path | None = None) -> TruthResult:
    """Run the study described by ``config``; returns the result.

    Every check on the data (split sizes per class, statement/negation pairs for CCS) runs before
    the model is loaded. With ``cache_dir``, harvested activations are kept there (one
    safetensors file per model identity, dataset content hash and layer list) and reused by a
    later run, so a failure after the harvest never costs the harvest again.
    """
    config.validate()
    console = console or Console(stderr=True)
    cache = Path(cache_dir) if cache_dir is not None else None
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    datasets, splits = _load_datasets(config, notes)
    timings["datasets_s"] = time.perf_counter() - t0

    with progress_display(console, enabled=progress) as bar:
        harvest = _harvest_stage(config, datasets, bar, console, cache, timings)
        t = time.perf_counter()
        # measured now: the CPUs other processes leave free decide how many fits run at once
        fits = _fit_everything(config, datasets, splits, harvest.acts, harvest.layers, bar, notes,
                               timings, workers=resolve_threads())
        timings["probes_s"] = time.perf_counter() - t
        console.print(f"fitted probes and controls in {timings['probes_s']:.0f} s")

    t = time.perf_counter()
    # The PCA views' SVDs and the rest use BLAS: a pool larger than the CPUs other processes
    # leave free spin-waits at every barrier (25 x slower beside two busy loops), so the stage
    # runs on the threads the policy gives it now.
    with limit_threads(resolve_threads()):
        analysis = _analysis_stage(config, datasets, splits, harvest, fits, timings)
    timings["analysis_s"] = time.perf_counter() - t
    section = None
    if config.erasure_nulls:
        t = time.perf_counter()
        section = _erasure_nulls(config, datasets, splits, harvest, analysis.best_layer)
        timings["erasure_nulls_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    result = _result(config, datasets, splits, harvest, analysis, notes, timings)
    result.erasure_nulls = section
    return result


def _erasure_nulls(config: TruthConfig, datasets: dict, splits: dict[str, Any],
                   harvest: _Harvest, best_layer: dict) -> dict[str, Any] | None:
    from interplab.studies.truth_erasure import chosen_layer, erasure_and_nulls, model_null_rows

    ts = config.train_sets[0]
    key, names = _train_key(ts), [_short_name(n) for n in ts]
    chosen = chosen_layer(config, best_layer, key)
    if chosen is None:
        return None
    reset = harvest.acts.get("reset")
    reset_rows = None
    if reset is not None:  # the reset control's harvest: same network, texts and tokens
        li = harvest.layers.index(chosen[1])
        reset_rows = np.concatenate([reset[n][0][li][getattr(splits[n], part)]
                                     for part in ("train", "test") for n in names])
    model_rows = model_null_rows(config, datasets, splits, names, chosen[1], reset_rows)
    with limit_threads(1):
        return erasure_and_nulls(config, datasets, splits, harvest.acts["model"], harvest.layers,
                                 best_layer, key, names, model_rows,
                                 reused_reset="reset" in model_rows and reset_rows is not None)


@dataclass
class _Harvest:
    """Last-token activations of the model (and of its reset copy, for that control)."""

    layers: list[int]
    acts: dict[str, dict]  # "model" / "reset" -> dataset name -> (acts [L, n, d], log-probs)
    model_identity: dict[str, Any]
    reset_identity: dict[str, Any] | None


def _harvest_stage(config: TruthConfig, datasets: dict, bar: Progress | LineProgress,
                   console: Console, cache: Path | None, timings: dict[str, float]) -> _Harvest:
    """Load the model, harvest every dataset at every layer (and the reset copy's, when that
    control is on); the model is released before returning."""
    from interplab.models import HookPoint, load, reset_copy

    t = time.perf_counter()
    lm = load(config.model, device=config.device)
    layers = list(range(lm.n_layers)) if config.layers is None else list(config.layers)
    lm.resolve_hooks([HookPoint.resid_post(layer) for layer in layers])
    timings["load_s"] = time.perf_counter() - t
    n_statements = sum(len(ds) for ds in datasets.values())
    console.print(f"loaded {lm.name} in {timings['load_s']:.0f} s; {len(datasets)} datasets, "
                  f"{n_statements} statements, {len(layers)} layers")
    t = time.perf_counter()
    # threads="auto" is re-decided between batches across both harvests (threads=0 below: the
    # harvest calls leave the count to this pool), so a passing load does not fix it for good
    with AdaptiveThreads() as pool:
        model_acts, reused = _harvest_all(lm, datasets, layers, config.batch_size, bar, "model",
                                          cache, threads=0)
        acts = {"model": model_acts}
        timings["harvest_model_s"] = time.perf_counter() - t
        reset_identity = None
        if "reset" in config.controls:
            reset = reset_copy(lm, seed=config.seed)
            reset_identity = reset.identity()
            acts["reset"], hits = _harvest_all(reset, datasets, layers, config.batch_size, bar,
                                               "reset network", cache, with_logprobs=False,
                                               threads=0)
            reused += hits
            del reset
    timings["harvest_threads"] = pool.used[0]
    timings["harvest_thread_changes"] = len(pool.used) - 1
    timings["harvest_threads_last"] = pool.used[-1]
    timings["harvest_s"] = time.perf_counter() - t
    timings["harvest_reset_s"] = timings["harvest_s"] - timings["harvest_model_s"]
    console.print(f"harvesting done in {timings['harvest_s']:.0f} s"
                  + (f" ({reused} dataset harvests reused from {cache})" if reused else ""))
    return _Harvest(layers, acts, lm.identity(), reset_identity)


@dataclass
class _Analysis:
    """Everything computed from the fits: accuracies with intervals, the layer chosen on
    validation, verdicts, control checks, likelihood and PCA views, method and summary text."""

    test_names: list[str]
    train_keys: list[str]
    accuracy: dict
    heldout: dict
    validation: dict
    best_layer: dict
    scored: dict
    likelihood: dict
    pca: Any
    verdicts: list[dict]
    control_checks: list[dict]
    method: Any
    summary: list[str]


def _analysis_stage(config: TruthConfig, datasets: dict, splits: dict[str, Any],
                    harvest: _Harvest, fits: _Fits, timings: dict[str, float]) -> _Analysis:
    layers = harvest.layers
    t = time.perf_counter()
    test_names = list(datasets)
    train_keys = [_train_key(ts) for ts in config.train_sets]
    accuracy, heldout, validation, best_layer = _aggregate(config, fits, test_names, layers,
                                                           workers=resolve_threads())
    timings["bootstrap_s"] = time.perf_counter() - t
    scored = {key: {n: info for n, (_, info) in rows.items()} for key, rows in fits.rows.items()}
    likelihood = _likelihood(config, datasets, splits, harvest.acts["model"], test_names,
                             train_keys, fits, best_layer, layers)
    pca = _pca_views(config, datasets, harvest.acts["model"], best_layer, train_keys, layers)
    verdicts = _verdicts(accuracy, best_layer, train_keys, test_names, layers, scored)
    control_checks = _control_checks(heldout, best_layer, layers)
    method = _method(config, datasets, splits, train_keys, layers)
    summary = _summary(harvest.model_identity["name"], verdicts, control_checks, heldout,
                       best_layer, layers)
    return _Analysis(test_names, train_keys, accuracy, heldout, validation, best_layer, scored,
                     likelihood, pca, verdicts, control_checks, method, summary)


def _result(config: TruthConfig, datasets: dict, splits: dict[str, Any], harvest: _Harvest,
            a: _Analysis, notes: list[str], timings: dict[str, float]) -> TruthResult:
    return TruthResult(
        config=asdict(config), versions=_versions(), model=harvest.model_identity,
        reset_model=harvest.reset_identity,
        datasets=[{**ds.identity, **{f"n_{p}": int(len(splits[n].sides()[p])) for p in SPLIT_PARTS},
                   "split_rule": splits[n].rule, "example_true": _example(ds, 1),
                   "example_false": _example(ds, 0)} for n, ds in datasets.items()],
        layers=harvest.layers, probes=list(config.probes), train_sets=a.train_keys,
        test_sets=a.test_names, accuracy=a.accuracy, heldout=a.heldout, validation=a.validation,
        best_layer=a.best_layer, scored=a.scored, method=a.method, verdicts=a.verdicts,
        control_checks=a.control_checks, summary=a.summary, likelihood=a.likelihood, pca=a.pca,
        notes=notes, timings=timings,
    )


@dataclass
class _Fits:
    """Per-row outcomes of every fit: keys are (train key, probe, variant)."""

    correct: dict[tuple, dict[str, np.ndarray]]  # per test set (and "val:<name>") [L, n]
    decisions: dict[tuple, dict[str, np.ndarray]]
    shuffle_correct: dict[tuple, dict[str, np.ndarray]]  # per test [L, n_shuffles, n]
    rows: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]]  # train key -> scored rows
    own: dict[str, list[str]]  # train key -> its datasets


# Order of the fit jobs: the slow probes first, so the last job to finish is a short one.
_FIT_ORDER = {"ccs": 0, "logistic": 1, "lda": 2}


@dataclass(frozen=True)
class _FitJob:
    key: str  # the training set
    names: tuple[str, ...]  # its datasets
    source: str  # "model" or "reset"
    probe: str


def _fit_everything(config: TruthConfig, datasets: dict, splits: dict[str, Any], acts: dict,
                    layers: list[int], bar: Progress | LineProgress, notes: list[str],
                    timings: dict[str, float], workers: int = 1) -> _Fits:
    """Every probe on every training set and source (model, reset copy), with its controls.

    The fits are independent jobs (training set × source × probe); ``workers`` processes run
    them side by side, one thread each (:func:`interplab.parallel.map_jobs`), and the results do
    not depend on ``workers``. ``timings["fit_<probe>_<source>_s"]`` add up the jobs' own times.
    """
    from interplab.parallel import map_jobs

    n_fits = len(config.train_sets) * len(config.probes) * (1 + ("reset" in acts))
    fit_task = bar.add_task("fit probes", total=n_fits * len(layers))
    fits = _Fits({}, {}, {}, {}, {})
    jobs: list[_FitJob] = []
    for source in acts:
        for ts in config.train_sets:
            key, names = _train_key(ts), [_short_name(n) for n in ts]
            fits.own[key] = names
            fits.rows[key] = _scored_rows(names, datasets, splits)
            for probe in sorted(config.probes, key=lambda p: _FIT_ORDER.get(p, len(_FIT_ORDER))):
                if is_pair_probe(probe) and not _pair_rows(names, datasets, splits):
                    if source == "model":
                        notes.append(
                            f"{_label(probe)} was not trained on {key}: it needs "
                            "statement/negation pairs, and none of its datasets has its "
                            "negated twin among the datasets of this run.")
                    bar.advance(fit_task, len(layers))
                    continue
                jobs.append(_FitJob(key, tuple(names), source, probe))
    run = _fit_job_runner(config, datasets, splits, acts, fits.rows)
    outcomes = map_jobs(lambda i: run(jobs[i]), len(jobs), workers,
                        on_done=lambda _: bar.advance(fit_task, len(layers)))
    timings["fit_workers"] = workers
    # filled in the order of the configuration (training set, source, probe), as the report reads it
    sources, keys = list(acts), [_train_key(ts) for ts in config.train_sets]
    done = sorted(zip(jobs, outcomes, strict=True), key=lambda jo: (
        keys.index(jo[0].key), sources.index(jo[0].source), config.probes.index(jo[0].probe)))
    for job, (outcome, seconds) in done:
        fit_key = f"fit_{job.probe}_{job.source}_s"
        timings[fit_key] = timings.get(fit_key, 0.0) + seconds
        if job.source == "model" and "shuffled" in outcome.correct:
            fits.shuffle_correct[(job.key, job.probe)] = outcome.shuffle_correct
        for v in outcome.correct:
            name_v = v if job.source == "model" else "reset"
            fits.correct[(job.key, job.probe, name_v)] = outcome.correct[v]
            fits.decisions[(job.key, job.probe, name_v)] = outcome.decision[v]
    return fits


def _fit_job_runner(config: TruthConfig, datasets: dict, splits: dict[str, Any], acts: dict,
                    rows: dict[str, dict]) -> Any:
    """A function running one :class:`_FitJob`: ``(ProbeOutcome, seconds)``. It keeps the
    training and test arrays of the last (training set, source) it saw, which the next job in
    the same process usually shares (the jobs come grouped so)."""
    from interplab.probes.generalization import LabelledActs, fit_and_test

    variants = ["probe", *[c for c in ("shuffled", "random") if c in config.controls]]
    negated = {b for _, b in _twin_couples(list(datasets))}
    last: dict[tuple[str, str], tuple] = {}

    def arrays(job: _FitJob) -> tuple:
        if (job.key, job.source) not in last:
            last.clear()  # one group at a time: each holds a copy of every scored activation
            data = acts[job.source]

            def part(name: str, r: np.ndarray) -> LabelledActs:
                return LabelledActs(data[name][0][:, r], datasets[name].labels[r],
                                    negated=name in negated)

            # groups name each row's dataset: per-dataset centring centres each component
            train = LabelledActs.concatenate({n: part(n, splits[n].train) for n in job.names})
            tests = {n: part(n, r) for n, (r, _) in rows[job.key].items()}
            tests.update({f"val:{n}": part(n, splits[n].val) for n in job.names})
            pairs = _training_pairs(list(job.names), datasets, splits, data)
            last[(job.key, job.source)] = (train, tests, pairs)
        return last[(job.key, job.source)]

    def run(job: _FitJob) -> tuple[Any, float]:
        train, tests, pairs = arrays(job)
        t = time.perf_counter()
        outcome = fit_and_test(
            job.probe, train, tests, pairs=pairs if is_pair_probe(job.probe) else None,
            centering=config.centering,
            variants=variants if job.source == "model" else ["probe"],
            seed=config.seed, n_shuffles=config.n_shuffles)
        return outcome, time.perf_counter() - t

    return run


def _aggregate(config: TruthConfig, fits: _Fits, test_names: list[str], layers: list[int],
               workers: int = 1) -> tuple[dict, dict, dict, dict]:
    """Bootstrap intervals per cell; the layer chosen on validation, the curve on test. Each
    (training set, probe, variant)'s intervals are one job for ``workers`` processes (the
    intervals are seeded per cell, so they do not depend on ``workers``)."""
    from interplab.parallel import map_jobs

    cases = list(fits.correct)

    def intervals(i: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        key, probe, variant = cases[i]
        return ([_interval(fits, key, probe, variant, [t], config, config.seed + ti)
                 for ti, t in enumerate(test_names)],
                _interval(fits, key, probe, variant, fits.own[key], config, config.seed))

    done = dict(zip(cases, map_jobs(intervals, len(cases), workers), strict=True))
    accuracy: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for key, probe, variant in cases:
        cells = done[(key, probe, variant)][0]
        entry = {k: np.stack([c[k] for c in cells], axis=1).tolist()
                 for k in ("value", "lo", "hi")}
        entry["n"] = [c["n"] for c in cells]
        accuracy.setdefault(key, {}).setdefault(probe, {})[variant] = entry
        dec = fits.decisions[(key, probe, variant)]
        if variant in ("probe", "reset"):
            entry["positive_rate"] = np.stack(
                [(dec[t] > 0).mean(axis=1) for t in test_names], axis=1).tolist()
        if variant == "shuffled":  # how much single shuffles disagree with each other
            entry["sd_over_shuffles"] = np.stack([c["sd_over_shuffles"] for c in cells],
                                                 axis=1).tolist()

    heldout: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    validation: dict[str, dict[str, dict[str, Any]]] = {}
    best_layer: dict[str, dict[str, int]] = {}
    for (key, probe, variant), per_test in fits.correct.items():
        own = fits.own[key]
        est = done[(key, probe, variant)][1]
        heldout.setdefault(key, {}).setdefault(probe, {})[variant] = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in est.items()}
        if variant == "probe":
            val = np.concatenate([per_test[f"val:{n}"] for n in own], axis=1)
            val_acc = val.mean(axis=1)
            validation.setdefault(key, {})[probe] = {"value": val_acc.tolist(),
                                                     "n": int(val.shape[1])}
            best_layer.setdefault(key, {})[probe] = layers[int(np.argmax(val_acc))]
    return accuracy, heldout, validation, best_layer


def _interval(fits: _Fits, key: str, probe: str, variant: str, tests: list[str],
              config: TruthConfig, seed: int) -> dict[str, Any]:
    """Accuracy per layer on ``tests`` pooled, with its 95 % interval. The shuffled-label
    control's interval is that of one shuffled probe, so it includes the spread between
    shuffles (a bootstrap of their mean would read 0.41 ± 0.02 as below chance)."""
    from interplab.controls import shuffled_accuracy_interval
    from interplab.probes.generalization import bootstrap_accuracy

    if variant == "shuffled":
        hits = np.concatenate([fits.shuffle_correct[(key, probe)][t] for t in tests], axis=2)
        est = shuffled_accuracy_interval(hits, n_boot=config.n_boot, seed=seed)
        est.pop("per_shuffle")
    else:
        correct = np.concatenate([fits.correct[(key, probe, variant)][t] for t in tests], axis=1)
        est = bootstrap_accuracy(correct, n_boot=config.n_boot, seed=seed)
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in est.items()}


def _example(ds: Any, label: int) -> str:
    idx = np.flatnonzero(ds.labels == label)
    return ds.statements[int(idx[0])] if idx.size else ""


def _pair_rows(names: list[str], datasets: dict, splits: dict[str, Any]
               ) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(a, b, rows of a, rows of b)`` of the training pairs for pair probes (CCS): each
    training dataset with its negated twin, rows in both train splits; empty if there are none."""
    out = []
    for a, b in _twin_couples(list(datasets)):
        if a not in names and b not in names:
            continue
        rows = _twin_rows(datasets, a, b)
        if rows is None:
            continue
        ia, ib = rows
        keep = np.isin(ia, splits[a].train) & np.isin(ib, splits[b].train)
        if keep.any():
            out.append((a, b, ia[keep], ib[keep]))
    return out


def _training_pairs(names: list[str], datasets: dict, splits: dict[str, Any], data: dict) -> Any:
    """Training pairs for pair probes (CCS), or None if there are none (see :func:`_pair_rows`)."""
    from interplab.probes.generalization import PairedActs

    found = _pair_rows(names, datasets, splits)
    if not found:
        return None
    return PairedActs(np.concatenate([data[a][0][:, ia] for a, _, ia, _ in found], axis=1),
                      np.concatenate([data[b][0][:, ib] for _, b, _, ib in found], axis=1),
                      np.concatenate([datasets[a].labels[ia] for a, _, ia, _ in found]),
                      groups=np.concatenate([np.full(len(ia), f"{a}/{b}")
                                             for a, b, ia, _ in found]))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _likelihood(config: TruthConfig, datasets: dict, splits: dict[str, Any], data: dict,
                test_names: list[str], train_keys: list[str], fits: _Fits,
                best_layer: dict, layers: list[int]) -> dict[str, Any]:
    """Truth versus likelihood: log-prob/label correlations and a log-prob threshold baseline."""
    from interplab.controls import bootstrap_accuracy, bootstrap_statistic

    per_dataset = {}
    for name in test_names:
        lp = data[name][1]
        y = datasets[name].labels
        r, lo, hi = bootstrap_statistic(_pearson, lp, y, n_boot=config.n_boot, seed=config.seed)
        per_dataset[name] = {"r_logprob_label": r, "r_lo": lo, "r_hi": hi, "n": int(len(y)),
                             "mean_logprob_true": float(lp[y == 1].mean()),
                             "mean_logprob_false": float(lp[y == 0].mean())}
    baseline: dict[str, dict[str, Any]] = {}
    for ts, key in zip(config.train_sets, train_keys, strict=True):
        names = [_short_name(n) for n in ts]
        lp = np.concatenate([data[n][1][splits[n].train] for n in names])
        y = np.concatenate([datasets[n].labels[splits[n].train] for n in names])
        # 1-D threshold classifier, orientation and cut chosen on the training split only
        candidates = np.unique(lp)
        best = (0.0, 0.0, 1)
        for sign in (1, -1):
            for c in candidates:
                acc = float((((sign * (lp - c)) > 0).astype(int) == y).mean())
                if acc > best[0]:
                    best = (acc, float(c), sign)
        _, cut, sign = best
        baseline[key] = {"threshold": cut, "sign": sign, "test": {}}
        for ti, name in enumerate(test_names):
            idx = fits.rows[key][name][0]
            pred = ((sign * (data[name][1][idx] - cut)) > 0).astype(int)
            ok = (pred == datasets[name].labels[idx])[None, :]
            est = bootstrap_accuracy(ok, n_boot=config.n_boot, seed=config.seed + ti)
            baseline[key]["test"][name] = {"value": est["value"][0], "lo": est["lo"][0],
                                           "hi": est["hi"][0], "n": est["n"]}
    probe_corr: dict[str, dict[str, dict[str, float]]] = {}
    for key in train_keys:
        for probe, layer in best_layer.get(key, {}).items():
            dec = fits.decisions.get((key, probe, "probe"))
            if dec is None:
                continue
            li = layers.index(layer)
            probe_corr.setdefault(key, {})[probe] = {
                name: _pearson(dec[name][li], data[name][1][fits.rows[key][name][0]])
                for name in test_names
            }
    return {"per_dataset": per_dataset, "baseline": baseline, "probe_logprob_r": probe_corr}


def _pca_views(config: TruthConfig, datasets: dict, data: dict, best_layer: dict,
               train_keys: list[str], layers: list[int]) -> dict[str, Any]:
    from interplab.probes import pca_basis

    key = train_keys[0] if train_keys else None
    probe = next(iter(best_layer.get(key, {})), None) if key else None
    layer = best_layer[key][probe] if probe else layers[len(layers) // 2]
    li = layers.index(layer)
    own = {}
    for name in datasets:
        basis = pca_basis(data[name][0][li], k=2)
        xy = basis.project(data[name][0][li])
        own[name] = {"x": xy[:, 0].round(4).tolist(), "y": xy[:, 1].round(4).tolist(),
                     "label": datasets[name].labels.tolist(),
                     "explained": basis.explained_variance_ratio.round(4).tolist()}
    cross = []
    for a, b in config.pca_pairs:
        if a in datasets and b in datasets:
            basis = pca_basis(data[a][0][li], k=2)
            xy_a, xy_b = basis.project(data[a][0][li]), basis.project(data[b][0][li])
            cross.append({"basis": a, "data": b,
                          "x_basis": xy_a[:, 0].round(4).tolist(),
                          "y_basis": xy_a[:, 1].round(4).tolist(),
                          "label_basis": datasets[a].labels.tolist(),
                          "x": xy_b[:, 0].round(4).tolist(), "y": xy_b[:, 1].round(4).tolist(),
                          "label": datasets[b].labels.tolist()})
    return {"layer": layer, "own": own, "cross": cross}




# ---------------------------------------------------------------------------------- readings
_CENTERING_WORDS = {
    "per-dataset": "every dataset centred by its own mean (each component of a mixed training set "
                   "by its own), as in the geometry-of-truth work; this uses each test set's mean",
    "train": "every input centred by the training mean; nothing about a test set is used",
    "none": "raw activations, no centring",
}


def _method(config: TruthConfig, datasets: dict, splits: dict[str, Any],
            train_keys: list[str], layers: list[int]) -> dict[str, Any]:
    from interplab.controls.multiple import FDR_LEVEL, MIN_VERDICT_N

    return {
        "split": {"fractions": list(config.split),
                  "rules": {n: splits[n].rule for n in datasets}},
        "centering": config.centering,
        "centering_description": _CENTERING_WORDS[config.centering],
        "tokens": TOKENS,
        "layer_selection": "the layer with the highest accuracy on the training datasets' "
                           "pooled validation splits; test accuracy is reported at that layer",
        "targets": "a training dataset is scored on its test split; any other dataset on all "
                   "its rows, except the negation twins of training rows",
        "multiple_comparisons": f"exact two-sided binomial test against 0.5 per cell, "
                                f"Benjamini-Hochberg over all cells at the chosen layers, FDR "
                                f"{FDR_LEVEL:g}; no verdict below {MIN_VERDICT_N} statements",
    }


def _cell(entry: dict, li: int, ti: int) -> dict[str, float]:
    return {"value": entry["value"][li][ti], "lo": entry["lo"][li][ti],
            "hi": entry["hi"][li][ti], "n": entry["n"][ti]}


def _verdicts(accuracy: dict, best_layer: dict, train_keys: list[str], test_names: list[str],
              layers: list[int], scored: dict) -> list[dict[str, Any]]:
    """One row per (training set, probe, test set) at the chosen layer, graded as a family."""
    from interplab.controls.multiple import grade_family

    rows = []
    for key in train_keys:
        own = key.split("+")
        for probe, layer in best_layer.get(key, {}).items():
            li = layers.index(layer)
            per = accuracy[key][probe]
            for ti, test in enumerate(test_names):
                row = {"train": key, "probe": probe, "layer": layer, "test": test,
                       "kind": "own test split" if test in own else "transfer",
                       **_cell(per["probe"], li, ti),
                       "positive_rate": per["probe"]["positive_rate"][li][ti],
                       "twins_left_out": scored[key][test]["twins_left_out"]}
                for variant in ("shuffled", "random", "reset"):
                    row[variant] = _cell(per[variant], li, ti) if variant in per else None
                reset = row["reset"]
                row["reset_matches"] = bool(reset is not None and row["value"] > 0.6
                                            and reset["hi"] >= row["lo"])
                rows.append(row)
    graded = grade_family([r["value"] for r in rows], [r["n"] for r in rows],
                          [r["positive_rate"] for r in rows])
    for row, verdict in zip(rows, graded, strict=True):
        row.update(verdict.to_dict())
    return rows


def _control_checks(heldout: dict, best_layer: dict, layers: list[int]) -> list[dict[str, Any]]:
    """Every control that is off on the training sets' own test splits, with a comment."""
    checks = []
    for key, per_probe in heldout.items():
        for probe, entry in per_probe.items():
            li = layers.index(best_layer[key][probe])
            p = {k: entry["probe"][k][li] for k in ("value", "lo", "hi")}
            for variant in ("shuffled", "random", "reset"):
                if variant not in entry:
                    continue
                c = {k: entry[variant][k][li] for k in ("value", "lo", "hi")}
                comment = _control_comment(variant, probe, c, p)
                if comment:
                    checks.append({"train": key, "probe": probe, "layer": best_layer[key][probe],
                                   "control": variant, **c, "probe_value": p["value"],
                                   "comment": comment})
    return checks


def _control_comment(variant: str, probe: str, c: dict, p: dict) -> str | None:
    """Why a control away from where it should be matters, or None when it is where expected."""
    side = "above" if c["lo"] > 0.5 else "below" if c["hi"] < 0.5 else None
    if variant == "shuffled" and side:
        what = ("broken statement/negation pairs" if is_pair_probe(probe)
                else "shuffled labels")
        return (f"Fitted on {what}, the probe still scores {c['value']:.2f}, {side} chance: "
                "such directions lean on the highest-variance axes of the residual stream, "
                f"which here correlate with the labels{' negatively' if side == 'below' else ''}. "
                f"Read the probe's {p['value']:.2f} against {c['value']:.2f}, not against 0.50.")
    if variant == "random" and side:
        return (f"Norm-matched random directions (20, each with its threshold refitted on "
                f"training labels) score {c['value']:.2f} on average, {side} chance: part of the separation lies along "
                "dominant axes that any direction overlaps with, so the probe's margin over "
                "this control, not over 0.50, is its own contribution.")
    if variant == "reset" and p["value"] > 0.6 and c["hi"] >= p["lo"]:
        return (f"The weight-permuted network reaches {c['value']:.2f} against the trained "
                f"model's {p['value']:.2f} (overlapping intervals): what the probe reads here "
                "is available without learned weights (token identity or position), so it is "
                "not evidence of a learned truth representation.")
    return None


def _by_transfer(rows: Any) -> str:
    """"a → b (mass-mean 0.17, LDA 0.20); c → d (...)": cells grouped by transfer."""
    grouped: dict[str, list[str]] = {}
    for v in rows:
        grouped.setdefault(f"{v['train']} → {v['test']}", []).append(
            f"{_label(v['probe'])} {v['value']:.2f}")
    return "; ".join(f"{k} ({', '.join(p)})" for k, p in grouped.items())


def _summary(model: str, verdicts: list[dict], checks: list[dict], heldout: dict,
             best_layer: dict, layers: list[int]) -> list[str]:
    """The answer in a few sentences: in-distribution level, transfer, controls, inversions."""
    from interplab.controls.multiple import MIN_VERDICT_N

    if not verdicts:
        return [f"No probe could be fitted on {model} with these settings (see the notes)."]
    own = []
    for key, per_probe in heldout.items():
        for probe, entry in per_probe.items():
            li = layers.index(best_layer[key][probe])
            own.append((entry["probe"]["value"][li], entry["probe"]["lo"][li],
                        entry["probe"]["hi"][li], key, probe, best_layer[key][probe]))
    best = max(own)
    few = min(int(e["probe"]["n"]) for pe in heldout.values() for e in pe.values())
    caveat = (f" — on as few as {few} statements, too few for a verdict"
              if few < MIN_VERDICT_N else "")
    out = [f"On {model}, probes reach {min(o[0] for o in own):.2f}–{best[0]:.2f} accuracy on "
           "their training sets' test statements at the layer chosen on validation (best: "
           f"{_label(best[4])} on {best[3]}, {best[0]:.2f} "
           f"[{best[1]:.2f}, {best[2]:.2f}] at layer {best[5]}){caveat}."]
    transfers = [v for v in verdicts if v["kind"] == "transfer"]
    if transfers:
        counts = {k: sum(v["verdict"] == k for v in transfers) for k in (
            "above chance", "weakly above chance", "chance", "weakly below chance", "inverted",
            "one class", "too few statements")}
        parts = [f"{n} {'clearly above chance' if k == 'above chance' else k}"
                 for k, n in counts.items() if n]
        good = _by_transfer(v for v in transfers if v["verdict"] == "above chance")
        out.append(f"Does the direction generalize? Of {len(transfers)} transfers to other "
                   f"datasets (Benjamini–Hochberg, FDR 5 %): {', '.join(parts)}."
                   + (f" It carries over clearly on {good}." if good else
                      " No transfer is clearly above chance."))
    beats = []
    for variant, label in (("shuffled", "the shuffled-label control"),
                           ("random", "the random directions"), ("reset", "the reset network")):
        pairs = [(e["probe"]["lo"][layers.index(best_layer[k][p])],
                  e[variant]["hi"][layers.index(best_layer[k][p])])
                 for k, pe in heldout.items() for p, e in pe.items() if variant in e]
        if pairs:
            beats.append(f"{label} in {sum(lo > hi for lo, hi in pairs)} of {len(pairs)}")
    if beats:
        out.append("On their own test splits the probes beat " + ", ".join(beats)
                   + " cases (probe interval entirely above the control's).")
    inverted = _by_transfer(v for v in transfers if v["verdict"] == "inverted")
    if inverted:
        out.append(f"It inverts (strongly and significantly below chance) on {inverted}: there "
                   "the direction tracks something correlated with truth on the training data, "
                   "with the opposite sign.")
    if checks:
        out.append(f"{len(checks)} control reading(s) are off and commented below.")
    return out
