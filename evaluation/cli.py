"""``captionq eval``: generate, score, compare, correlate, calibrate, report.

Mounted by the ``captionq`` command (``producers/cli``) as ``captionq eval``; also runs alone as
``python -m evaluation.cli``. Errors print ``error[code]: message`` on stderr
and exit with status 2; ``--json`` prints machine-readable output on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from evaluation.errors import EvaluationError
from schemas.errors import ErrorCode

app = typer.Typer(
    rich_markup_mode=None,
    name="eval",
    help="Offline evaluation: caption a data set with a served model, score it (BLEU, METEOR, "
    "ROUGE-L, CIDEr-D, SPICE, CLIP-S) with bootstrap intervals, compare runs, correlate "
    "metrics with people, calibrate the auto-approve threshold, write HTML reports.",
    no_args_is_help=True,
    add_completion=False,
)

DatasetOpt = Annotated[Path | None, typer.Option(
    "--dataset", help="References: COCO annotation JSON, Karpathy dataset_*.json, a JSONL of "
    "{image, references}, or a result list (image_name, captions, prediction).")]
FormatOpt = Annotated[str, typer.Option(
    "--format", help="Layout of --dataset: auto, coco, karpathy, jsonl, results.")]
SplitOpt = Annotated[str, typer.Option(
    "--split", help="Karpathy split to use (train, val, test, restval; 'all' for every image).")]
RefsOpt = Annotated[str, typer.Option(
    "--references", help="How references reach the scorers: 'raw' (raw captions through the "
    "PTB tokenizer, as the COCO code does), 'tokens' (the tokens as they are, no PTB), "
    "'tokens-ptb' (the tokens through PTB, as COCOEvalCap does when given Karpathy's "
    "tokens). Tokens are the layout's own ('tokens' in Karpathy and JSONL), otherwise the "
    "text taken as already tokenised.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ImagesOpt = Annotated[Path | None, typer.Option(
    "--images", help="Folder of the images (needed by run, CLIP-S and report thumbnails).")]


def _fail(exc: EvaluationError) -> typer.Exit:
    typer.echo(f"error[{exc.code.value}]: {exc.message}", err=True)
    return typer.Exit(2)


def _emit(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=1, default=str) if as_json else text)


def _dataset(path: Path, fmt: str, split: str, references: str):  # noqa: ANN202
    from evaluation.datasets import FORMATS, ROUTES, load_dataset

    if fmt not in FORMATS:
        raise EvaluationError(ErrorCode.unknown_format, f"--format must be one of {FORMATS}")
    if references not in ROUTES:
        raise EvaluationError(ErrorCode.invalid_argument, f"--references is one of {ROUTES}")
    return load_dataset(path, fmt=fmt, split=None if split == "all" else split,  # type: ignore[arg-type]
                        references=references)  # type: ignore[arg-type]


@app.command()
def run(
    dataset: Annotated[Path, typer.Option("--dataset", help="References file (see `score`).")],
    images: Annotated[Path, typer.Option("--images", help="Folder of the data set's images.")],
    model: Annotated[str, typer.Option("--model", help="Hub id or local folder of the captioner "
                                                        "(any backend the worker serves).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: run.json + predictions.jsonl. "
                                                    "Run again with the same folder to resume.")],
    fmt: FormatOpt = "auto",
    split: SplitOpt = "test",
    revision: Annotated[str | None, typer.Option(help="Model revision (hub commit/tag).")] = None,
    prompt: Annotated[str | None, typer.Option(help="Text prefix given to the model.")] = None,
    prompt_version: Annotated[str | None, typer.Option(
        help="Label of the prompt recorded in provenance (default: hash of --prompt).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 40,
    num_beams: Annotated[int, typer.Option(min=1)] = 1,
    sample: Annotated[bool, typer.Option(help="Seeded sampling instead of greedy/beam.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (recorded; drives --sample).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Caption every image of a data set with a model, batched, resumable, with provenance."""
    from rich.progress import Progress

    from evaluation.datasets import check_images
    from evaluation.runs import RunConfig, load_captioner, run_captions

    try:
        data = _dataset(dataset, fmt, split, "raw")
        paths = check_images(data, images)
        config = RunConfig(model=model, revision=revision, prompt=prompt,
                           prompt_version=prompt_version, max_new_tokens=max_new_tokens,
                           num_beams=num_beams, sample=sample, seed=seed,
                           batch_size=batch_size, device=device)
        captioner = load_captioner(config)
        with Progress(transient=True) as progress:
            task = progress.add_task("captioning", total=len(data))
            summary = run_captions(
                captioner=captioner, config=config, dataset=data, images=paths, out_dir=out,
                on_batch=lambda n: progress.advance(task, n),
                dataset_source={"path": str(dataset.resolve()), "format": fmt, "split": split},
            )
    except EvaluationError as exc:
        raise _fail(exc) from exc
    _emit(summary.__dict__, as_json,
          f"{summary.generated} captioned, {summary.already_done} already done -> {out}")


@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(
        help="A run folder, a COCO results JSON ([{image_id, caption}]), a JSONL of "
        "{image_id, caption}, or a result list that also carries the references.")],
    dataset: DatasetOpt = None,
    fmt: FormatOpt = "auto",
    split: SplitOpt = "test",
    references: RefsOpt = "raw",
    metrics: Annotated[str, typer.Option(
        help="Comma-separated: Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr (or CIDEr-D), SPICE, "
        "CLIP-S, RefCLIP-S; an unknown name is an error.")] =
        "Bleu_1,Bleu_2,Bleu_3,Bleu_4,METEOR,ROUGE_L,CIDEr,SPICE",
    images: ImagesOpt = None,
    clip_model: Annotated[str | None, typer.Option(
        help="Local folder or hub id of a CLIP model: adds CLIP-S and RefCLIP-S "
        "(needs --images).")] = None,
    corenlp_dir: Annotated[Path | None, typer.Option(
        help="Folder with stanford-corenlp-3.6.0.jar and -models.jar for SPICE.")] = None,
    resamples: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    name: Annotated[str | None, typer.Option(help="Name of this run in reports.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the scores file here (JSON).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score predictions with the COCO caption metrics (Java required) and 95% bootstrap CIs.

    Needs Java 8+ on PATH (PTB tokenizer, METEOR, SPICE); fails with java_missing otherwise.
    SPICE is reported unavailable, with the reason, when its CoreNLP jars are absent.
    """
    from evaluation.metrics import resolve_metrics
    from evaluation.predictions import load_predictions
    from evaluation.progress import stages
    from evaluation.scoring import evaluate

    try:
        wanted = resolve_metrics(metrics)
        with stages("eval score") as stage:
            stage("reading predictions and references")
            preds, provenance = load_predictions(predictions)
            if dataset is not None:
                data = _dataset(dataset, fmt, split, references)
            else:
                data = _references_of(predictions, provenance, references)
            result = evaluate(
                data, preds, name=name or predictions.stem, metrics=wanted,
                images_dir=images, clip_model=clip_model, corenlp_dir=corenlp_dir,
                resamples=resamples, seed=seed, provenance=provenance, on_stage=stage,
            )
    except EvaluationError as exc:
        raise _fail(exc) from exc
    if out is not None:
        result.save(out)
    summary = {"name": result.name, "images": len(result.images),
               "metrics": {m: i.as_dict() for m, i in result.metrics.items()},
               "unavailable": result.unavailable, "details": result.details}
    lines = [f"{m}: {i.value:.3f} [{i.low:.3f}, {i.high:.3f}]" for m, i in result.metrics.items()]
    lines += [f"{m}: unavailable ({why})" for m, why in result.unavailable.items()]
    _emit(summary, as_json, "\n".join(lines))


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="Scores file of run A (from `score --out`).")],
    run_b: Annotated[Path, typer.Argument(help="Scores file of run B, same images.")],
    resamples: Annotated[int, typer.Option(min=1, help="Paired bootstrap resamples.")] = 1000,
    permutations: Annotated[int, typer.Option(min=1, help="Permutation-test rounds.")] = 1000,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    seed: int = 0,
    html: Annotated[Path | None, typer.Option(help="Also write an HTML comparison report.")] =
        None,
    as_json: JsonOpt = False,
) -> None:
    """Paired comparison per metric: B - A, bootstrap 95% CI, permutation p, significant?"""
    from evaluation.compare import align_rows
    from evaluation.compare import compare as paired
    from evaluation.report import render_comparison
    from evaluation.results import load_result

    try:
        a, b = load_result(run_a), load_result(run_b)
        stats_b = align_rows(a.image_ids, b.image_ids, b.statistics())
        diffs = paired(a.statistics(), stats_b, resamples=resamples,
                       permutations=permutations, alpha=alpha, seed=seed)
    except EvaluationError as exc:
        raise _fail(exc) from exc
    if html is not None:
        html.write_text(render_comparison([a, b], diffs), encoding="utf-8")
    lines = [f"{d.metric}: {d.a:.4f} -> {d.b:.4f} ({d.delta:+.4f}, CI [{d.low:+.4f}, "
             f"{d.high:+.4f}], p={d.p_value:.4f}){' significant' if d.significant else ''}"
             for d in diffs]
    _emit([d.as_dict() for d in diffs], as_json, "\n".join(lines))


@app.command()
def correlate(
    judgements: Annotated[Path, typer.Argument(help="Human judgements file.")],
    layout: Annotated[str, typer.Option(
        help="generic (CSV/TSV: image, candidate, score[, rater]), flickr8k-expert "
        "(ExpertAnnotations.txt), flickr8k-crowdflower (CrowdFlowerAnnotations.txt).")] =
        "generic",
    captions: Annotated[Path | None, typer.Option(
        help="Flickr8k.token.txt (caption texts and references) for the Flickr8K layouts.")] =
        None,
    protocol: Annotated[str, typer.Option(
        help="Flickr8K layouts. 'published' (the SPICE and CLIPScore papers' protocol): "
        "Expert drops candidates that are one of the image's captions, scores the rest "
        "against all five and keeps each expert's rating as a row; CrowdFlower keeps every "
        "pair and removes the judged captions from the references. 'leave-one-out': keep "
        "such candidates, score them against the other four, average the expert ratings.")] =
        "published",
    ratings: Annotated[str, typer.Option(
        help="Generic layout: 'mean' averages the ratings of a pair into one row, 'each' "
        "keeps every rating as its own row.")] = "mean",
    dataset: DatasetOpt = None,
    fmt: FormatOpt = "auto",
    split: SplitOpt = "test",
    metrics: Annotated[str, typer.Option(
        help="Comma-separated: Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr (or CIDEr-D), SPICE, "
        "CLIP-S, RefCLIP-S.")] = "Bleu_1,Bleu_4,METEOR,ROUGE_L,CIDEr,SPICE",
    images: ImagesOpt = None,
    clip_model: Annotated[str | None, typer.Option(help="CLIP model: adds CLIP-S, RefCLIP-S.")] =
        None,
    as_json: JsonOpt = False,
) -> None:
    """Kendall tau-b and tau-c between each metric and human judgements."""
    from evaluation.correlate import correlate as run_correlate
    from evaluation.judgements import load_judgements
    from evaluation.metrics import resolve_metrics

    try:
        wanted = resolve_metrics(metrics)
        loaded = load_judgements(judgements, layout, captions=captions,  # type: ignore[arg-type]
                                 protocol=protocol, ratings=ratings)  # type: ignore[arg-type]
        refs = None
        if dataset is not None:
            data = _dataset(dataset, fmt, split, "raw")
            refs = {s.image_file or s.image_id: s.references for s in data.samples}
            refs.update({s.image_id: s.references for s in data.samples})
        results, unavailable = run_correlate(loaded, references=refs, metrics=wanted,
                                             images_dir=images, clip_model=clip_model)
    except EvaluationError as exc:
        raise _fail(exc) from exc
    about = loaded.provenance()
    lines = [f"{about['layout']}, protocol {about['protocol']}: {about['rows']} rows from "
             f"{about['pairs']} judged pairs ({about['dropped']} dropped); published tables "
             f"report tau_{about['reported_tau']}"]
    lines += [f"{c.metric}: tau_b={c.tau_b:.4f} (p={c.p_b:.3g}) tau_c={c.tau_c:.4f} "
              f"(p={c.p_c:.3g}) n={c.pairs}" for c in results]
    lines += [f"{m}: unavailable ({why})" for m, why in unavailable.items()]
    _emit({"correlations": [c.as_dict() for c in results], "unavailable": unavailable,
           "judgements": about}, as_json, "\n".join(lines))


@app.command()
def calibrate(
    target_precision: Annotated[float, typer.Option(
        help="Share of auto-approved variants that reviewers would have approved.")] = 0.95,
    tenant: Annotated[str | None, typer.Option(
        help="Tenant name (or id): reads its review decisions from the database.")] = None,
    database_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL (default: DATABASE_URL from the settings).")] = None,
    decisions: Annotated[Path | None, typer.Option(
        help="Instead of the database: a CSV with columns score, decision.")] = None,
    min_support: Annotated[int, typer.Option(
        min=1, help="Fewest reviewed variants at or above the threshold.")] = 30,
    store: Annotated[bool, typer.Option(
        "--store/--dry-run", help="Write the threshold on the tenant (None if unreachable).")]
        = False,
    as_json: JsonOpt = False,
) -> None:
    """Fit the auto-approve threshold that reaches a target precision; print the curve.

    Labels come from review decisions: 'approved' counts as positive; 'edited' and
    'rejected' count as negative; pending and auto-approved variants are left out.
    """
    from evaluation.calibrate import calibrate_tenant, fit_threshold, read_decisions

    try:
        if (tenant is None) == (decisions is None):
            raise EvaluationError(ErrorCode.invalid_argument,
                                  "pass either --tenant (database) or --decisions (CSV)")
        if decisions is not None:
            result = fit_threshold(read_decisions(decisions), target_precision,
                                   min_support=min_support)
        else:
            from sqlmodel import Session

            engine = _engine(database_url)
            try:
                with Session(engine) as session:
                    result = calibrate_tenant(session=session, tenant=str(tenant),
                                              target_precision=target_precision, store=store,
                                              min_support=min_support)
            finally:
                engine.dispose()
    except EvaluationError as exc:
        raise _fail(exc) from exc
    _emit(result.as_dict(), as_json, result.summary())


@app.command()
def report(
    scores: Annotated[list[Path], typer.Argument(help="One scores file, or several to compare.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")],
    images: ImagesOpt = None,
    examples: Annotated[int, typer.Option(min=0, help="Best and worst examples shown.")] = 5,
    variants: Annotated[Path | None, typer.Option(
        help="JSONL of ad-copy variants ({style, platform, text, flags, job_id}, or jobs as "
        "the API returns them): adds the ad-copy checks by style and by platform.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report (metrics with CIs, plots, examples, provenance)."""
    from evaluation.adcopy import read_variants
    from evaluation.compare import align_rows
    from evaluation.compare import compare as paired
    from evaluation.report import render_comparison, render_run
    from evaluation.results import load_result

    try:
        results = [load_result(p) for p in scores]
        copy = read_variants(variants) if variants is not None else None
        if len(results) == 1:
            page = render_run(results[0], images_dir=images, examples=examples, variants=copy,
                              warn=lambda m: typer.echo(f"warning: {m}", err=True))
            diffs = []
        else:
            a = results[0]
            diffs = paired(a.statistics(), align_rows(
                a.image_ids, results[1].image_ids, results[1].statistics()))
            page = render_comparison(results, diffs)
    except EvaluationError as exc:
        raise _fail(exc) from exc
    out.write_text(page, encoding="utf-8")
    machine = {"report": str(out), "runs": [
        {"name": r.name, "metrics": {m: i.as_dict() for m, i in r.metrics.items()},
         "unavailable": r.unavailable} for r in results],
        "differences": [d.as_dict() for d in diffs]}
    _emit(machine, as_json, f"wrote {out}")


def _references_of(predictions: Path, provenance: dict[str, Any], references: str):  # noqa: ANN202
    """The references when no --dataset is given: the run's own data set, or a result list."""
    from evaluation.datasets import detect_format

    if predictions.is_dir():
        source = provenance.get("dataset_source")
        if not source:
            raise EvaluationError(
                ErrorCode.invalid_argument,
                f"{predictions} names its data set ({provenance.get('dataset', 'unknown')}) "
                "but not its file; pass --dataset")
        return _dataset(Path(source["path"]), source.get("format", "auto"),
                        source.get("split", "test"), references)
    try:
        layout = detect_format(predictions)
    except EvaluationError:
        layout = None
    if layout != "results":
        raise EvaluationError(
            ErrorCode.invalid_argument,
            f"{predictions} holds predictions only, no references; pass --dataset")
    return _dataset(predictions, "results", "all", references)


def _engine(url: str | None):  # noqa: ANN202
    from schemas.settings import core_settings

    url = url or core_settings().database_url
    try:
        from schemas.store.sessions import make_engine  # the shared store, when present
    except ImportError:
        from sqlmodel import create_engine as make_engine
    return make_engine(url)


if __name__ == "__main__":
    app()
