"""`interplab sae train | eval | dashboard`: a thin shell over :mod:`interplab.sae`."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from interplab.errors import InterplabError

console = Console(stderr=True)
sae_app = typer.Typer(help="Train, evaluate and inspect sparse autoencoders.",
                      no_args_is_help=True)


def _floats(s: str, name: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise InterplabError(f"{name} must be comma-separated numbers, got {s!r}") from None


def _ints(s: str, name: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise InterplabError(f"{name} must be comma-separated integers, got {s!r}") from None


HELD_OUT_FRACTION = 0.05  # last 5 % of a corpus's documents: never trained on by `sae train`


def _corpus_split(corpus: str, part: str) -> tuple[list[str], str]:
    """The ``train`` or ``held_out`` documents of a packaged corpus, and a description."""
    from interplab.datasets.corpus import load_corpus

    docs = load_corpus(corpus).documents
    n_hold = max(1, round(len(docs) * HELD_OUT_FRACTION))
    cut = len(docs) - n_hold
    if part == "held_out":
        return docs[cut:], (f"{corpus} documents {cut}–{len(docs) - 1} (last {n_hold} of "
                            f"{len(docs)}; `sae train --model` never uses them)")
    return docs[:cut], f"{corpus} documents 0–{cut - 1} (the last {n_hold} are held out)"


def _corpus_tokens(lm, corpus: str, context_length: int, max_sequences: int | None,
                   part: str | None = None):
    """Packed ``[n, context_length]`` ids of the corpus (``part``: train | held_out | None = all)."""
    from interplab.datasets.corpus import load_corpus, pack_tokens

    bos_id = lm.bos_token_id if lm.bos_token_id is not None else lm.tokenizer.eos_token_id
    docs = load_corpus(corpus).documents if part is None else _corpus_split(corpus, part)[0]
    toks = pack_tokens(docs, lm.tokenizer, context_length, bos="each",
                       bos_token_id=bos_id, max_sequences=max_sequences)
    return toks, bos_id


def _store_fingerprint(st) -> str:
    """sha256 of what a store's rows are: its identity fields and every shard's checksum."""
    from interplab.activations.store import IDENTITY_KEYS

    blob = {"identity": {k: st.manifest.get(k) for k in IDENTITY_KEYS},
            "shards": [[s.get("sha256"), s.get("n_rows")] for s in st.shards]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _resume_command() -> str:
    if sys.argv[1:3] == ["sae", "train"]:
        return "interplab " + shlex.join(sys.argv[1:])
    return "the same `interplab sae train` command"


def _exclusion_rule(no_exclusion: bool, norm_ratio: float):
    from interplab.activations.exclusion import ExclusionRule

    return ExclusionRule.none() if no_exclusion else ExclusionRule(norm_ratio=norm_ratio or None)


@sae_app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", help="folder; one sub-folder per trained SAE"),
    store: Path = typer.Option(None, "--store", help="activation store to train from"),
    model: str = typer.Option("", "--model", help="stream activations from this model instead"),
    hook: str = typer.Option("", "--hook", help="hook point, e.g. blocks.15.hook_resid_post"),
    arch: str = typer.Option("topk", "--arch", help="architecture(s), comma-separated: "
                             "relu, relu_decnorm, gated, topk, batchtopk, jumprelu"),
    width: int = typer.Option(0, "--width", help="dictionary size (default 8 × d_in)"),
    k: str = typer.Option("32", "--k", help="active features for topk/batchtopk (list ok)"),
    sparsity: str = typer.Option("1.0", "--sparsity", help="λ for relu/gated/jumprelu (list ok)"),
    steps: int = typer.Option(0, "--steps", help="optimizer steps (default: one pass)"),
    batch_size: int = typer.Option(4096, "--batch-size"),
    lr: float = typer.Option(3e-4, "--lr"),
    lr_warmup: int = typer.Option(100, "--lr-warmup"),
    sparsity_warmup: int = typer.Option(500, "--sparsity-warmup"),
    corpus: str = typer.Option("kjv", "--corpus", help="with --model: kjv | python-docs"),
    context_length: int = typer.Option(128, "--context-length", help="with --model"),
    max_sequences: int = typer.Option(0, "--max-sequences", help="with --model: limit"),
    mixed_precision: str = typer.Option("fp32", "--mixed-precision", help="fp32 | bf16"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    log_every: int = typer.Option(100, "--log-every"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    wandb_project: str = typer.Option("", "--wandb-project", help="log to wandb too"),
    extend_steps: bool = typer.Option(False, "--extend-steps", help="continue the run in --out "
                                      "up to a larger --steps (all other settings unchanged)"),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="train on an "
                                          "unfinished harvest (recorded in each SAE's config)"),
    norm_ratio: float = typer.Option(10.0, "--norm-ratio", help="leave out tokens with a norm "
                                     "above this × the batch median (0: no norm test)"),
    no_exclusion: bool = typer.Option(False, "--no-exclusion", help="train on every token, "
                                      "position 0 and massive-norm tokens included"),
    executor: str = typer.Option("local", "--executor", help="local (one pass for the sweep) | "
                                 "ray (one task per SAE on --store; the same SAEs)"),
    ray_address: str = typer.Option("", "--ray-address", help="with --executor ray: an existing "
                                    "cluster (e.g. auto); default: a local cluster"),
    workers: int = typer.Option(0, "--workers", help="with --executor ray: SAEs trained at once "
                                "(0: as many as the cluster has CPUs)"),
) -> None:
    """Train one SAE or a sweep (every combination of --arch, --k, --sparsity) in one pass.

    By default position 0 and massive-norm tokens are left out (see --norm-ratio). With
    --executor ray each SAE is a task of its own (out/<name>/ holds its log and checkpoint)."""
    from interplab.activations.exclusion import ExclusionCount, ordinary_batches
    from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, architectures, save_sae
    from interplab.sae.trainer import TrainingInterrupted, run_size_warnings

    archs = [a.strip() for a in arch.split(",") if a.strip()]
    unknown = [a for a in archs if a not in architectures()]
    if unknown:
        raise InterplabError(f"unknown architecture(s) {unknown}; choose from {architectures()}")
    if (store is None) == (not model):
        raise InterplabError("give exactly one data source: --store PATH or --model NAME")
    from interplab.distributed import make_executor, run_name

    runner = make_executor(executor, address=ray_address, workers=workers, progress=True)
    if runner.remote and (store is None or extend_steps):
        raise InterplabError("--executor ray trains from a --store (harvest one with `interplab "
                             "harvest --for-sae --executor ray`), without --extend-steps")
    lm = None
    n_ctx = None
    if store is not None:
        from interplab.activations import ActivationStore

        st = ActivationStore(store)
        st.require_complete(allow_incomplete)
        hook = hook or (st.hooks[0] if len(st.hooks) == 1 else "")
        if hook not in st.hooks:
            raise InterplabError(f"hook {hook!r} is not in the store {store} (it holds "
                                 f"{st.hooks}); pass --hook with one of them")
        d_in = st.d_model
        n_rows = st.n_rows
        data_identity = {"store": _store_fingerprint(st), "hook": hook}
        model_name = (st.manifest.get("model") or {}).get("name") if isinstance(
            st.manifest.get("model"), dict) else st.manifest.get("model")
    else:
        from interplab.models import load

        lm = load(model, device=device)
        if not hook:
            raise InterplabError("--hook is required with --model")
        lm.parse_hook(hook)
        d_in = lm.d_model
        toks, bos_id = _corpus_tokens(lm, corpus, context_length, max_sequences or None,
                                      part="train")
        n_rows = int((toks != bos_id).sum())
        model_name = lm.name
        n_ctx = context_length
        data_identity = {"model": lm.identity(), "hook": hook, "corpus": corpus,
                         "context_length": context_length, "max_sequences": max_sequences}
    width = width or 8 * d_in
    rule = _exclusion_rule(no_exclusion, norm_ratio)
    excl = {"exclusion": rule.to_dict()}
    ks = _ints(k, "--k")
    lams = _floats(sparsity, "--sparsity")
    configs = []
    for a in archs:
        if a in ("topk", "batchtopk"):
            for kk in ks:
                if kk > width:
                    raise InterplabError(f"k={kk} is larger than the width {width}; lower --k")
                configs.append(SAEConfig(a, d_in, width, k=kk, hook=hook, model=model_name,
                                         context_length=n_ctx, seed=seed, **excl))
        else:
            for lam in lams:
                configs.append(SAEConfig(a, d_in, width, sparsity_coefficient=lam, hook=hook,
                                         model=model_name, context_length=n_ctx, seed=seed,
                                         **excl))
    if store is not None and not st.complete:  # only reachable with --allow-incomplete
        for c in configs:
            c.extra["incomplete_store"] = {"texts_done": st.texts_done, "n_texts": st.n_texts}
    total = steps or max(1, n_rows // batch_size)
    out.mkdir(parents=True, exist_ok=True)
    data_identity["batch_size"] = batch_size
    tcfg = TrainerConfig(
        total_steps=total, lr=lr, lr_warmup_steps=lr_warmup, sparsity_warmup_steps=sparsity_warmup,
        mixed_precision=mixed_precision, log_path=str(out / "train_log.jsonl"),
        log_every_steps=log_every, checkpoint_dir=str(out / "checkpoint"),
        checkpoint_every_steps=checkpoint_every, seed=seed, device=device, progress=True,
        wandb_project=wandb_project or None,
        dead_window_tokens=min(10_000_000, max(batch_size, n_rows // 4)),
        resample_every_steps=_resample_every(out / "checkpoint", total, extend_steps),
        data_identity=data_identity,
    )
    for warning in run_size_warnings(n_rows, configs, tcfg):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if runner.remote:
        with runner:
            return _train_on_executor(runner, store, hook, configs, tcfg, batch_size, out, rule,
                                      n_rows)
    epochs = max(1, -(-total * batch_size // max(n_rows, 1)))
    if lm is None:
        count = ExclusionCount()
        batches = ordinary_batches(st.iter_batches(batch_size, hook, seed=seed, epochs=epochs,
                                                   drop_last=True, with_position=True),
                                   rule, count)
    else:
        from interplab.sae.buffer import MixingBuffer

        batches = MixingBuffer(lm, hook, toks, batch_size, buffer_tokens=16 * batch_size,
                               seed=seed, bos_token_id=bos_id, epochs=epochs, exclusion=rule)
        count = batches.exclusion_count
    try:
        trainer = SAETrainer(configs, tcfg).fit(batches, extend_steps=extend_steps)
    except TrainingInterrupted as exc:
        console.print(f"interrupted: {exc}; train_log.jsonl holds the steps up to it; the SAE "
                      f"folders are written when training ends. Resume with: {_resume_command()}",
                      highlight=False)
        raise typer.Exit(128 + exc.signum) from None
    names = []
    for sae in trainer.finalized_saes():
        name = run_name(sae.config)
        save_sae(sae, out / name)
        names.append(name)
    last = trainer.log_history[-1] if trainer.log_history else {}
    console.print(f"trained {len(names)} SAE(s) for {trainer.step} steps "
                  f"({trainer.tokens_seen} tokens) → {out}")
    console.print(f"excluded {count.n_excluded} of {count.n_seen} tokens read "
                  f"({rule.describe()}); input scale {trainer.scale:.4g} from "
                  f"{trainer.scale_tokens} ordinary tokens")
    for name, m in zip(names, last.get("saes", []), strict=False):
        console.print(f"  {name}: FVE {m['fraction_of_variance_explained']:.3f}, "
                      f"L0 {m['l0']:.1f}, alive {m['fraction_alive']:.2f}")


def _train_on_executor(runner, store: Path, hook: str, configs, tcfg, batch_size: int,
                       out: Path, rule, n_rows: int) -> None:
    """One task per SAE (``interplab.distributed.sweep``); each equals the local sweep's SAE."""
    from interplab.distributed import plan_sweep, run_sweep

    plan = plan_sweep(store, hook, configs, tcfg, batch_size=batch_size, out=out,
                      exclusion=rule, n_rows=n_rows)
    results = run_sweep(plan, runner)
    console.print(f"trained {len(results)} SAE(s) for {results[0]['steps']} steps "
                  f"({results[0]['tokens']} tokens) each, one task per SAE → {out}")
    ex = results[0]["exclusion"]
    console.print(f"excluded {ex['n_excluded']} of {ex['n_seen']} tokens read per SAE "
                  f"({rule.describe()}); input scale {results[0]['scale']:.4g} from "
                  f"{results[0]['scale_tokens']} ordinary tokens")
    for r in results:
        m = r["metrics"]
        if m:  # empty with --log-every 0
            console.print(f"  {r['name']}: FVE {m['fraction_of_variance_explained']:.3f}, "
                          f"L0 {m['l0']:.1f}, alive {m['fraction_alive']:.2f}")


def _resample_every(checkpoint_dir: Path, total: int, extend_steps: bool) -> int:
    """Dead-feature resampling interval: an eighth of the run, or the extended run's own."""
    from interplab.sae.trainer import CHECKPOINT_FILE, read_checkpoint_meta

    if not extend_steps:
        return max(1, total // 8)
    if not (checkpoint_dir / CHECKPOINT_FILE).exists():
        raise InterplabError(f"--extend-steps: there is no checkpoint in {checkpoint_dir} to "
                             "extend; drop the flag to start a new run")
    return read_checkpoint_meta(checkpoint_dir)["trainer_config"]["resample_every_steps"]


@sae_app.command("eval")
def eval_cmd(
    sae_path: Path = typer.Option(..., "--sae", help="SAE folder (ours, SAELens, "
                                  "dictionary_learning)"),
    store: Path = typer.Option(None, "--store", help="activation store for reconstruction"),
    model: str = typer.Option("", "--model", help="model for CE loss recovered"),
    hook: str = typer.Option("", "--hook", help="default: the SAE's own hook"),
    context_lengths: str = typer.Option("", "--context-lengths",
                                        help="e.g. 128,512 (default: the SAE's)"),
    corpus: str = typer.Option("kjv", "--corpus"),
    n_sequences: int = typer.Option(32, "--n-sequences"),
    max_tokens: int = typer.Option(0, "--max-tokens", help="limit for the store evaluation"),
    out: Path = typer.Option(None, "--out", help="write the metrics as JSON here"),
    device: str = typer.Option("cpu", "--device"),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="evaluate on an "
                                          "unfinished harvest (recorded in the output)"),
    norm_ratio: float = typer.Option(0.0, "--norm-ratio", help="override the SAE's exclusion "
                                     "norm ratio (default: the rule it was trained with)"),
    no_exclusion: bool = typer.Option(False, "--no-exclusion", help="headline on every token"),
) -> None:
    """Reconstruction metrics on a store and/or CE loss recovered with the SAE spliced in.

    Headline metrics are on ordinary tokens (position 0 and massive-norm tokens left out, by the
    rule the SAE was trained with, else the default); all-token metrics are reported beside them.
    CE is computed on the held-out tail of the corpus."""
    from interplab.activations.exclusion import ExclusionRule
    from interplab.sae import load_sae
    from interplab.sae.evaluate import evaluate_reconstruction_split

    sae = load_sae(sae_path, device=device)
    hook = hook or sae.config.hook or ""
    rule = ExclusionRule.from_dict(sae.config.exclusion)
    if no_exclusion or norm_ratio:
        rule = _exclusion_rule(no_exclusion, norm_ratio)
    result: dict = {"sae": str(sae_path), "config": sae.config.to_dict(),
                    "exclusion": rule.to_dict()}
    if store is None and not model:
        raise InterplabError("nothing to evaluate: give --store and/or --model")
    if store is not None:
        from interplab.activations import ActivationStore

        st = ActivationStore(store)
        st.require_complete(allow_incomplete)
        result["store"] = {"path": str(store), "complete": st.complete,
                           "texts_done": st.texts_done, "n_texts": st.n_texts}
        h = hook if hook in st.hooks else (st.hooks[0] if len(st.hooks) == 1 else hook)
        if st.d_model != sae.d_in:
            raise InterplabError(f"store {store} has d={st.d_model} but the SAE takes "
                                 f"d_in={sae.d_in}; use the store of the SAE's hook")
        split = evaluate_reconstruction_split(
            sae, st.iter_batches(4096, h, shuffle=False, with_position=True), rule,
            max_tokens=max_tokens or None)
        result["reconstruction"] = split.to_dict()
        for label, m in (("ordinary tokens", split.ordinary), ("all tokens", split.all_tokens)):
            console.print(f"reconstruction on {m.n_tokens} {label}: FVE "
                          f"{m.fraction_of_variance_explained:.4f}, MSE {m.mse:.4g}, "
                          f"L0 {m.l0:.1f}")
        console.print(f"  excluded {split.exclusion['n_excluded']} of "
                      f"{split.exclusion['n_seen']} tokens ({rule.describe()})")
    if model:
        from interplab.models import load
        from interplab.sae.ce_eval import ce_loss_recovered

        lm = load(model, device=device)
        if not hook:
            raise InterplabError("the SAE names no hook; pass --hook")
        lengths = _ints(context_lengths, "--context-lengths") or [sae.config.context_length or 128]
        toks, bos_id = _corpus_tokens(lm, corpus, max(lengths), n_sequences, part="held_out")
        held = _corpus_split(corpus, "held_out")[1]
        console.print(f"CE on {toks.shape[0]} sequences from the held-out slice: {held}")
        ev = ce_loss_recovered(lm, sae, hook, toks, context_lengths=lengths, progress=True,
                               bos_token_id=bos_id, exclusion=rule)
        result["ce"] = {**ev.to_dict(), "data": held, "n_sequences": int(toks.shape[0])}
        for r in ev.results:
            console.print(
                f"L={r.context_length} ({r.n_tokens} tokens, {r.n_excluded_positions} positions "
                f"excluded): loss recovered vs mean ablation {r.loss_recovered_vs_mean:.4f}, "
                f"CE increase {r.ce_increase:+.4f} nats (clean {r.clean_loss:.4f}, SAE "
                f"{r.sae_loss:.4f}), KL {r.kl_sae:.4f} (vs zero ablation, not a headline: "
                f"{r.loss_recovered_vs_zero:.4f})", markup=False)
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    else:
        typer.echo(text)


@sae_app.command("dashboard")
def dashboard_cmd(
    sae_path: Path = typer.Option(..., "--sae"),
    model: str = typer.Option(..., "--model"),
    out: Path = typer.Option(..., "--out", help="HTML file to write"),
    features: str = typer.Option("", "--features", help="feature ids; default: most active"),
    n_features: int = typer.Option(12, "--n-features"),
    hook: str = typer.Option("", "--hook"),
    corpus: str = typer.Option("kjv", "--corpus"),
    n_sequences: int = typer.Option(64, "--n-sequences"),
    context_length: int = typer.Option(128, "--context-length"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Write a self-contained HTML dashboard for chosen features."""
    from interplab.models import load
    from interplab.report.sae_dashboard import render_dashboard
    from interplab.sae import load_sae
    from interplab.sae.dashboard import feature_dashboards

    sae = load_sae(sae_path, device=device)
    lm = load(model, device=device)
    hook = hook or sae.config.hook or ""
    toks, bos_id = _corpus_tokens(lm, corpus, context_length, n_sequences)
    data = feature_dashboards(lm, sae, hook, toks, features=_ints(features, "--features") or None,
                              n_features=n_features, bos_token_id=bos_id)
    render_dashboard(data, out)
    console.print(f"dashboard for {len(data.features)} features → {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(sae_app, name="sae")


