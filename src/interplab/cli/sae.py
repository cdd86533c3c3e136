"""`interplab sae train | eval | dashboard`: thin shells over :mod:`interplab.studies.sae` (whose
:class:`~interplab.studies.sae.SaeStudyConfig` the ``train`` options are derived from) and
:mod:`interplab.sae`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from interplab.cli.executor import executor_option, ray_address_option, workers_option
from interplab.cli.options import from_config
from interplab.errors import InterplabError
from interplab.studies.sae import SaeStudyConfig
from interplab.studies.sae import corpus_split as _corpus_split
from interplab.studies.sae import corpus_tokens as _corpus_tokens

console = Console(stderr=True)
sae_app = typer.Typer(help="Train, evaluate and inspect sparse autoencoders.",
                      no_args_is_help=True)


def _ints(s: str, name: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise InterplabError(f"{name} must be comma-separated integers, got {s!r}") from None


def _resume_command() -> str:
    if sys.argv[1:3] == ["sae", "train"]:
        return "interplab " + shlex.join(sys.argv[1:])
    return "the same `interplab sae train` command"


def _exclusion_rule(no_exclusion: bool, norm_ratio: float):
    from interplab.activations.exclusion import ExclusionRule

    return ExclusionRule.none() if no_exclusion else ExclusionRule(norm_ratio=norm_ratio or None)


def train(
    cfg: SaeStudyConfig,
    out: Path = typer.Option(..., "--out", help="folder; one sub-folder per trained SAE"),
    executor: str = executor_option("one pass for the sweep", "one task per SAE on --store; "
                                    "the same SAEs"),
    ray_address: str = ray_address_option(),
    workers: int = workers_option("SAEs trained"),
) -> None:
    """Train one SAE or a sweep (every combination of --arch, --k, --sparsity) in one pass.

    By default position 0 and massive-norm tokens are left out (see --norm-ratio). With
    --executor ray each SAE is a task of its own (out/<name>/ holds its log and checkpoint)."""
    from interplab.distributed import make_executor, study_executor
    from interplab.sae.trainer import TrainingInterrupted
    from interplab.studies.sae import run_sae_study, train_sweep

    runner = make_executor(executor, address=ray_address, workers=workers, progress=True)
    try:
        with runner:
            result = run_sae_study(cfg, out, execute=study_executor(runner) if runner.remote
                                   else train_sweep)
    except TrainingInterrupted as exc:
        console.print(f"interrupted: {exc}; train_log.jsonl holds the steps up to it; the SAE "
                      f"folders are written when training ends. Resume with: {_resume_command()}",
                      highlight=False)
        raise typer.Exit(128 + exc.signum) from None
    console.print(f"trained {len(result.runs)} SAE(s) for {result.steps} steps "
                  f"({result.tokens_seen} tokens) → {out}")
    console.print(f"excluded {result.tokens_excluded} of {result.tokens_read} tokens read "
                  f"({result.exclusion_description}); input scale {result.input_scale:.4g} from "
                  f"{result.scale_tokens} ordinary tokens")
    for run in result.runs:
        m = run.metrics
        if m:
            console.print(f"  {run.name}: FVE {m['fraction_of_variance_explained']:.3f}, "
                          f"L0 {m['l0']:.1f}, alive {m['fraction_alive']:.2f}")
    if result.null_control:
        _print_null_control(result.null_control, out)


def _print_null_control(nc: dict, out: Path) -> None:
    console.print(f"null control ({nc['null']}; retrained on {nc['n_rows']} sampled rows, "
                  f"{nc['n_heldout']} held out) → {out / 'null_control.json'}")
    for name, c in nc["compared"].items():
        d = c["model_minus_null"]["fve_heldout"]
        console.print(f"  {name}: held-out FVE {c['model']['heldout']['fve']:.3f} vs null "
                      f"{c['null']['heldout']['fve']:.3f}, model − null {d['value']:+.3f} "
                      f"[{d['lo']:+.3f}, {d['hi']:+.3f}]", highlight=False)
    for name, why in nc["not_compared"].items():
        console.print(f"  {name}: not compared ({why})", highlight=False)


# Option names of the first release of `sae train`, kept working.
TRAIN_RENAME = {
    "trainer.total_steps": "steps",
    "trainer.lr_warmup_steps": "lr-warmup",
    "trainer.sparsity_warmup_steps": "sparsity-warmup",
    "trainer.checkpoint_every_steps": "checkpoint-every",
    "trainer.log_every_steps": "log-every",
}
# Set by the study from the data and the output folder.
TRAIN_EXCLUDE = {"trainer.log_path", "trainer.checkpoint_dir", "trainer.data_identity",
                 "trainer.progress", "trainer.dead_window_tokens", "trainer.resample_every_steps"}
train_cmd = sae_app.command("train")(
    from_config(SaeStudyConfig, rename=TRAIN_RENAME, exclude=TRAIN_EXCLUDE)(train))


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


