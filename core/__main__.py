"""Command line: `python -m core COMMAND --db FILE ...`; human-readable output, `--json` for scripts.

Commands: ingest, demo, stats, agreement, duplicates, snapshot, diff, export, train,
autolabel, label-issues, user. Each opens the catalog itself; if the dashboard holds the file for
writing, the command says so and exits with status 3.
"""
from __future__ import annotations

import argparse
import decimal
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import duckdb
import numpy as np

from core import catalog
from core.config import default_catalog_path
from core.formats import READERS, FormatError


class _UntilClosed:
    """A stream's writes until the stream is gone (`... |& head` has exited), then nothing: the
    progress bar stops drawing and the work goes on, rather than ending as a failed job."""

    def __init__(self, stream) -> None:
        self.stream, self.gone = stream, False

    def __getattr__(self, name: str):  # fileno, isatty, encoding: the terminal's width and such
        return getattr(self.stream, name)

    def write(self, text: str) -> None:
        if not self.gone:
            try:
                self.stream.write(text)
            except OSError:
                self.gone = True

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except OSError:
                self.gone = True


def _progress_bar(description: str):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=description, unit="img", file=_UntilClosed(sys.stderr),
               dynamic_ncols=True)

    def progress(done: int, total: int, message: str = "") -> None:
        if bar.total != total:
            bar.total = total
        bar.set_description(message or description, refresh=False)
        bar.update(done - bar.n)

    progress.close = bar.close
    return progress


def _print_problems(examples: list, counts: dict) -> None:
    if not counts and not examples:
        return
    print("\nSkipped or flagged (" + ", ".join(f"{n} {a}" for a, n in counts.items()) + "):")
    for item in examples:
        where = f" [{item['location']}]" if item.get("location") else ""
        print(f"  {item['action']:>8}  {item['file']}{where}: {item['reason']}")
    rest = sum(counts.values()) - len(examples)
    if rest > 0:
        print(f"  ... and {rest:,} more: the Overview page lists them all, as a CSV download too")


def _positive(text: str) -> int:
    """An argument that must be a whole number from 1 up."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 up")
    return value


def _json_safe(value):
    """`value` with NaN and infinities as null (JSON has neither; `json.dumps` would write
    NaN and Infinity, which strict parsers refuse), numpy values as Python's, anything else
    (dates, paths) as its text."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(getattr(value, "dtype", None), np.dtype) and value.dtype.kind in ("m", "M"):
        # as text, not tolist()'s nanosecond integers; NaT as null
        return np.where(np.isnat(value), None, np.asarray(value).astype(str)).tolist()
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy value or array
        value = value.tolist()
        if isinstance(value, list):
            return _json_safe(value)
    if (isinstance(value, float) and not math.isfinite(value)) or type(value).__name__ in (
            "NAType", "NaTType"):  # pandas' missing values
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, decimal.Decimal):  # DuckDB's DECIMAL columns: a number, not text
        return _json_safe(float(value))
    return str(value)  # dates, paths and the like, as `default=str` wrote them


def dumps(value, **options) -> str:
    """JSON text of a command's report: strict JSON, whatever numbers the report holds."""
    options.pop("default", None)  # everything is made serialisable above
    return json.dumps(_json_safe(value), allow_nan=False, **options)


def cmd_ingest(args) -> int:
    from core import ingest, jobs

    ingest.check_source(args.source, args.labels, args.format)  # a typo creates no catalog
    con = catalog.open_catalog(args.db, program="python -m core ingest")
    params = {k: str(v) for k, v in vars(args).items() if k not in ("func",) and v is not None}
    bar = None if args.json else _progress_bar("ingest")

    def work(cursor, progress, job_id):
        return ingest.ingest(cursor, args.source, fmt=args.format, labels=args.labels,
                             dataset=args.dataset, split=args.split, annotator=args.annotator,
                             classes=args.classes.split(",") if args.classes else None,
                             workers=args.workers, job_id=job_id, progress=progress,
                             user=args.user, engine=args.engine, ray_address=args.ray_address)

    try:
        summary = jobs.run_job(con, "ingest", params, work, progress=bar)
    finally:
        if bar:
            bar.close()
    if args.json:
        print(dumps(asdict(summary), default=str, indent=2))
    else:
        print(f"dataset {summary.dataset} ({summary.format}): {summary.files} files, "
              f"{summary.added} added, {summary.unchanged} unchanged, {summary.changed} changed, "
              f"{summary.unreadable} unreadable; labels: {summary.labels_added} added, "
              f"{summary.labels_unchanged} already present")
        if summary.moved:
            print(f"{summary.moved:,} image{'s' if summary.moved != 1 else ''} already in the "
                  f"catalog put in split {args.split} (undo: Duplicates page, Resolutions)")
        _print_problems(summary.examples, summary.problems)
    return 0 if summary.ingested_anything else 1


def cmd_demo(args) -> int:
    from core import demo

    bar = None if args.json else _progress_bar("demo")
    try:
        built = demo.build_demo(args.db, progress=bar, force=args.force)
    finally:
        if bar:
            bar.close()
    print(dumps(built, indent=2) if args.json else built["message"])
    return 0


def cmd_stats(args) -> int:
    from core import stats

    con = catalog.open_catalog(args.db, read_only=True)
    names = [args.dataset] if args.dataset else catalog.list_dataset_names(con)
    report = {name: stats.dataset_stats(con, catalog.find_dataset(con, name)) for name in names}
    if args.json:
        print(dumps({"datasets": report}, indent=2, default=str))
    elif not report:
        print(f"{args.db}: no dataset yet (add one with `python -m core ingest`)")
    else:
        for name, item in report.items():
            print(stats.format_stats(name, item))
    return 0


def _pick_dataset(con, name: str | None) -> catalog.Dataset:
    if name:
        return catalog.find_dataset(con, name)
    names = catalog.list_dataset_names(con)
    if not names:
        raise catalog.CatalogError("the catalog has no dataset yet")
    return catalog.find_dataset(con, names[0])


def cmd_agreement(args) -> int:
    from core import quality
    from core.box_agreement import dataset_object_agreement

    con = catalog.open_catalog(args.db, read_only=not args.save_consensus,
                               program="python -m core agreement")
    dataset = _pick_dataset(con, args.dataset)
    kinds = ("human", "import") if args.include_given else ("human",)
    objects = dataset_object_agreement(con, dataset.dataset_id, iou_threshold=args.iou)
    try:
        result = quality.dataset_quality(con, dataset, kinds=kinds, n_resamples=args.resamples,
                                         seed=args.seed)
    except ValueError as err:
        if objects is None:
            raise catalog.CatalogError(str(err)) from err
        result = None
    saved = (quality.save_consensus(con, dataset, result, user=args.user)
             if args.save_consensus and result else None)
    report = {"dataset": dataset.name, **(quality.quality_json(result) if result else {}),
              "consensus_saved": saved}
    if objects is not None:
        report["objects"] = {"iou_threshold": objects.iou_threshold, "alpha": objects.alpha,
                             "pairs": objects.pairs.to_dict("records")}
    if args.json:
        print(dumps(report, indent=2, default=float))
        return 0
    if result is not None:
        print(quality.format_quality(dataset.name, result))
    if objects is not None:
        overall = objects.pairs[objects.pairs["class"] == "all"]
        print(f"boxes and polygons (IoU >= {objects.iou_threshold}): alpha {objects.alpha:.3f}")
        for row in overall.itertuples(index=False):
            print(f"  {row.annotator_a} vs {row.annotator_b}: precision {row.precision:.3f}, "
                  f"recall {row.recall:.3f}, F1 {row.f1:.3f}, mean IoU {row.mean_iou:.3f}")
    if saved is not None:
        print(f"consensus saved for {saved:,} images: resolved labels use it where no review "
              "or given label exists")
    return 0


def cmd_duplicates(args) -> int:
    from core import duplicates

    con = catalog.open_catalog(args.db, read_only=True)
    dataset = _pick_dataset(con, args.dataset)
    method = args.method or duplicates.DEFAULT_METHOD
    bar = None if args.json or method != "embedding" else _progress_bar("embeddings")
    try:
        report = duplicates.find_duplicates(con, dataset, method=method,
                                            max_distance=args.threshold, progress=bar)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if bar:
            bar.close()
    if args.json:
        print(dumps(duplicates.report_json(report), indent=2, default=str))
    else:
        print(duplicates.format_report(dataset.name, report))
    return 0



def cmd_snapshot(args) -> int:
    from core import snapshots

    con = catalog.open_catalog(args.db, program="python -m core snapshot")
    dataset = _pick_dataset(con, args.dataset)
    if args.list or not args.name:
        table = snapshots.list_snapshots(con, dataset)
        if args.json:
            print(table.to_json(orient="records", date_format="iso", indent=2))
        else:
            print(table.to_string(index=False) if len(table)
                  else f"{dataset.name}: no snapshots yet")
        return 0
    point = snapshots.create_snapshot(con, dataset, args.name, author=args.author, note=args.note)
    if args.json:
        print(dumps({"dataset": dataset.name, "name": args.name, **asdict(point)}, indent=2))
    else:
        print(f"snapshot {args.name!r} of {dataset.name}: label events up to {point.max_event_id}, "
              f"image events up to {point.max_image_event_id}")
    return 0


def cmd_diff(args) -> int:
    from core import snapshots

    con = catalog.open_catalog(args.db, program="python -m core diff")
    dataset = _pick_dataset(con, args.dataset)
    diff = snapshots.diff_snapshots(con, dataset, args.before, args.after)
    if args.json:
        print(dumps(snapshots.diff_json(diff), indent=2, default=str))
    else:
        print(snapshots.format_diff(diff))
    return 0


def _target_shares(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError as err:
        raise catalog.CatalogError(f"--target {text!r}: expected class=share,class=share") from err


def cmd_export(args) -> int:
    from core import export, jobs

    if not (args.force or export.folder_is_empty(args.out)):
        print(f"error: {args.out} is not empty: choose an empty folder, or give --force to "
              "overwrite", file=sys.stderr)
        return 2
    con = catalog.open_catalog(args.db, program="python -m core export")
    dataset = _pick_dataset(con, args.dataset)
    options = export.ExportOptions(
        format=args.format, splits=tuple(args.splits.split(",")) if args.splits else None,
        include_excluded=args.include_excluded, model_labels=args.model_labels,
        images=args.images, strip_exif=args.strip_exif, weights=not args.no_weights,
        target=_target_shares(args.target), oversample=args.oversample, seed=args.seed,
        force=args.force)
    params = {"dataset": dataset.name, "out": str(args.out), "snapshot": args.snapshot,
              "format": args.format}
    bar = None if args.json else _progress_bar("export")
    try:
        summary = jobs.run_job(con, "export", params, lambda cursor, progress, job_id:
                               export.export_dataset(cursor, dataset, args.out, options,
                                                     snapshot=args.snapshot, progress=progress),
                               progress=bar)
    except export.ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if bar:
            bar.close()
    if args.json:
        print(dumps(asdict(summary), indent=2, default=str))
        return 0
    print(f"exported {summary.dataset} ({summary.snapshot}) as {summary.format} to {summary.out}: "
          f"{summary.images} images, {summary.class_labels} image labels, {summary.objects} "
          f"objects, {summary.augmented} augmented copies, {summary.files} files")
    for reason, count in summary.skipped.items():
        print(f"  left out {count} images: {reason}")
    for warning in summary.warnings:
        print(f"  note: {warning}")
    return 0

# ---- micro-models: train, autolabel, label-issues


def _class_list(values: list[str] | None) -> tuple[str, ...] | None:
    """--classes a b c, or a,b,c."""
    if not values:
        return None
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def _run_summary(run: dict) -> dict:
    """The parts of a run the command line prints: evaluation headline and thresholds."""
    from core import modeleval

    metrics = run["metrics"] or {}
    summary = {"run_id": int(run["run_id"]), "status": run["status"], "task": run["task"],
               "classes": [name for name, _ in run["classes"]], "weights": run["weights"],
               "training": metrics.get("training"), "prediction": metrics.get("prediction")}
    stored = metrics.get("evaluation")
    if stored:
        evaluation = modeleval.Evaluation.from_json(stored)
        summary["evaluation"] = {
            "images": evaluation.n_images, "accuracy": evaluation.accuracy,
            "kappa": asdict(evaluation.kappa),
            "threshold_for_precision": {str(p): modeleval.threshold_for_precision(
                evaluation.coverage, p) for p in (0.9, 0.95, 0.99)},
            "coverage_at_precision": {str(p): float(evaluation.coverage.loc[
                evaluation.coverage["precision"] >= p, "coverage"].max() or 0)
                for p in (0.9, 0.95, 0.99)}}
    return summary


def _print_run(summary: dict) -> None:
    training = summary["training"] or {}
    print(f"run {summary['run_id']} ({summary['task']}: {', '.join(summary['classes'])}): "
          f"{summary['status']}; {training.get('train_images')} training images, "
          f"{training.get('epochs')} epochs in {training.get('seconds', 0):.1f} s"
          + (" (stopped by the time limit)" if training.get("stopped_by_time") else ""))
    evaluation = summary.get("evaluation")
    if not evaluation:
        print("no held-out labels: nothing to evaluate on (use --per-class to keep some back)")
    else:
        kappa = evaluation["kappa"]
        print(f"held-out: {evaluation['images']} images, accuracy {evaluation['accuracy']:.3f}, "
              f"Cohen's kappa {kappa['value']:.3f} [95% CI {kappa['ci_low']:.3f}, "
              f"{kappa['ci_high']:.3f}]")
        for p, threshold in evaluation["threshold_for_precision"].items():
            coverage = evaluation["coverage_at_precision"][p]
            where = f"threshold {threshold:.3f}" if threshold is not None else "not reachable"
            print(f"  precision {float(p):.0%}: {where}, covers {coverage:.1%} of held-out images")
    print(f"weights: {summary['weights']}")


def _detect_summary(run: dict) -> dict:
    """A detection run's headline: held-out mAP@0.5, overall and per class."""
    metrics = run["metrics"] or {}
    stored = metrics.get("detection")
    summary = {"run_id": int(run["run_id"]), "status": run["status"], "task": run["task"],
               "classes": [name for name, _ in run["classes"]], "weights": run["weights"],
               "training": metrics.get("training"), "prediction": metrics.get("prediction"),
               "evaluation": None}
    if stored:
        per_class = dict(zip(stored["per_class"]["class"], stored["per_class"]["ap"]))
        summary["evaluation"] = {"images": stored["images"], "map50": stored["map"],
                                 "ap50_per_class": per_class}
    return summary


def _print_detect_run(summary: dict) -> None:
    training = summary["training"] or {}
    print(f"run {summary['run_id']} (detect: {', '.join(summary['classes'])}): "
          f"{summary['status']}; {training.get('train_images')} training images "
          f"({training.get('train_boxes')} boxes) in {training.get('seconds', 0):.1f} s; "
          f"proposes {summary['prediction']['images_per_second']:.1f} images/s")
    evaluation = summary["evaluation"]
    if not evaluation:
        print("no held-out boxed images: nothing to evaluate on (use --images to keep some back)")
    else:
        print(f"held-out: {evaluation['images']} images, mAP@0.5 {evaluation['map50']:.3f} ("
              + ", ".join(f"{name} {ap:.3f}" for name, ap in evaluation["ap50_per_class"].items())
              + ")")
    print(f"weights: {summary['weights']}")


def _detect_request(args):
    """(request, train function, summary, printer) of `train --task detect`."""
    from core import autodetect

    overrides = {"seconds": args.seconds, "image_size": args.image_size}
    request = autodetect.DetectRequest(
        classes=_class_list(args.classes), split=args.split, images=args.images,
        holdout_split=args.holdout_split, seed=args.seed,
        weights=str(args.weights) if args.weights else None,
        config=tuple((k, v) for k, v in overrides.items() if v is not None))
    return request, autodetect.train_detect_run, _detect_summary, _print_detect_run


def _classify_request(args):
    """(request, train function, summary, printer) of `train` for classify and find-more."""
    from core import autolabel

    overrides = {"seconds": args.seconds, "arch": args.arch, "image_size": args.image_size}
    request = autolabel.TrainRequest(
        classes=_class_list(args.classes), split=args.split, per_class=args.per_class,
        seed=args.seed, weights=str(args.weights) if args.weights else None,
        task="find-more" if args.find_more else "classify", positive=args.find_more,
        config=tuple((k, v) for k, v in overrides.items() if v is not None))
    return request, autolabel.train_run, _run_summary, _print_run


def cmd_train(args) -> int:
    from core import jobs

    con = catalog.open_catalog(args.db, program="python -m core train")
    dataset = _pick_dataset(con, args.dataset)
    request, train, summarise, show = (_detect_request if args.task == "detect"
                                       else _classify_request)(args)
    engine = {} if args.engine == "local" else {"engine": args.engine,
                                                "ray_address": args.ray_address}
    if engine and args.task == "detect":
        raise catalog.CatalogError("--engine ray: detection models train and predict on this "
                                   "machine only; leave --engine out")
    params = {"dataset": dataset.name, "task": args.task,
              **{k: v for k, v in asdict(request).items() if v}}
    bar = None if args.json else _progress_bar("train")
    try:
        run_id = jobs.run_job(con, "train", params, lambda cursor, progress, job_id:
                              train(cursor, dataset, request, job_id=job_id,
                                    created_by=args.user, progress=progress, **engine),
                              progress=bar)
    finally:
        if bar:
            bar.close()
    summary = summarise(catalog.model_run(con, run_id))
    if args.json:
        print(dumps(summary, indent=2, default=str))
    else:
        show(summary)
    return 0


def _threshold(con, args) -> float:
    from core import autolabel, modeleval

    if args.threshold is not None:
        return args.threshold
    evaluation = autolabel.run_evaluation(con, args.run)
    if evaluation is None:
        raise catalog.CatalogError(f"run {args.run} has no held-out evaluation: give --threshold")
    threshold = modeleval.threshold_for_precision(evaluation.coverage, args.precision)
    if threshold is None:
        raise catalog.CatalogError(f"run {args.run} reaches precision {args.precision} at no "
                                   "threshold on its held-out images: give --threshold")
    return threshold


def cmd_autolabel(args) -> int:
    from core import autolabel

    con = catalog.open_catalog(args.db, program="python -m core autolabel")
    if args.rollback is not None:
        removed = autolabel.rollback_run(con, args.rollback, by=args.user)
        report = {"run_id": args.rollback, "removed": removed}
        print(dumps(report) if args.json else
              f"run {args.rollback} rolled back: {removed} model labels removed (as delete "
              "events), its review queues deleted")
        return 0
    if args.run is None or (args.threshold is None and args.precision is None):
        raise catalog.CatalogError("give --run ID with --threshold T (or --precision P), "
                                   "or --rollback ID")
    result = autolabel.apply_run(con, args.run, threshold=_threshold(con, args),
                                 strategy=args.strategy, include_labelled=args.include_labelled,
                                 created_by=args.user)
    if args.json:
        print(dumps(asdict(result), indent=2))
    else:
        print(f"run {result.run_id} at threshold {result.threshold:.3f}: {result.labelled} model "
              f"labels written, {result.queued} images queued for review"
              + (f" (queue {result.queue_id}, {result.strategy} first)" if result.queue_id else ""))
    return 0


def cmd_label_issues(args) -> int:
    from core import suspects

    con = catalog.open_catalog(args.db, read_only=not args.queue,
                               program="python -m core label-issues")
    dataset = _pick_dataset(con, args.dataset)
    overrides = {"seconds": args.seconds, "arch": args.arch}
    bar = None if args.json else _progress_bar("label-issues")
    try:
        issues = suspects.find_label_issues(
            con, dataset, split=args.split, train_split=args.train_split, folds=args.folds,
            classes=_class_list(args.classes), seed=args.seed, progress=bar,
            config=tuple((k, v) for k, v in overrides.items() if v is not None),
            engine=args.engine, ray_address=args.ray_address)
    except ValueError as err:
        raise catalog.CatalogError(str(err)) from err
    finally:
        if bar:
            bar.close()
    if args.csv:
        Path(args.csv).write_text(suspects.issues_csv(issues))
    queue_id = suspects.send_to_queue(con, dataset, issues, created_by=args.user) if args.queue else None
    if args.json:
        print(issues.drop(columns="image_id").to_json(orient="records", indent=2))
        return 0
    print(f"{len(issues)} suspect labels in {dataset.name}"
          + (f" split {args.split}" if args.split else "")
          + (f" (review queue {queue_id})" if queue_id else "") + ", most suspect first:")
    print(issues.head(args.limit).drop(columns="image_id").to_string(index=False))
    return 0




# ---- accounts


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise catalog.CatalogError("--password-stdin: no password on standard input")
    return password


def _change_account(con, args, role: str | None) -> dict:
    """Add, set-role or disable one account as `args.user`; what to report."""
    from core import users

    if args.action == "add":
        password = users.add_user(con, args.name, role, by=args.user,
                                  password=_read_password() if args.password_stdin else None)
        return {"name": args.name, "role": role,
                "password": None if args.password_stdin else password}
    if args.action == "set-role":
        users.set_role(con, args.name, role, by=args.user)
        return {"name": args.name, "role": role}
    users.disable_user(con, args.name, by=args.user)
    return {"name": args.name, "active": False}


def cmd_user(args) -> int:
    from core import users

    if args.action == "list":
        table = users.list_users(catalog.open_catalog(args.db, read_only=True))
        print(table.to_json(orient="records", date_format="iso", indent=2) if args.json
              else table.to_string(index=False) if len(table) else "no accounts: single-user mode")
        return 0
    role = args.role or args.new_role
    if not args.name or (args.action in ("add", "set-role") and not role):
        raise catalog.CatalogError(f"user {args.action}: give the account name"
                                   + (" and its role" if args.action != "disable" else ""))
    con = catalog.open_catalog(args.db, program="python -m core user")
    try:
        report = _change_account(con, args, role)
    except ValueError as err:
        raise catalog.CatalogError(str(err)) from err
    if args.json:
        print(dumps(report, indent=2))
    elif report.get("password"):
        print(f"account {args.name} ({report['role']}) added; one-time password (changed at the "
              f"first sign-in): {report['password']}")
    else:
        print(f"account {args.name}: " + ", ".join(f"{k} {v}" for k, v in report.items()
                                                  if k not in ("name", "password")))
    return 0


def _add_engine_options(p: argparse.ArgumentParser, work: str) -> None:
    """--engine and --ray-address: where `work` runs (Ray is optional: requirements-ray.txt)."""
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help=f"{work} in processes on this machine (default) or as tasks on a Ray "
                        "cluster, whose nodes must see the images at the same paths (shared "
                        "storage); results are the same")
    p.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster's head, host:port "
                   "(default: SIEVE_RAY_ADDRESS or RAY_ADDRESS, else Ray started on this machine)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Sieve command line")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--db", type=Path, default=default_catalog_path(),
                       help="catalog file (default: %(default)s)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    p = add("ingest", cmd_ingest, "ingest images and labels from a folder")
    p.add_argument("source", type=Path, help="folder holding the images")
    p.add_argument("--format", default="auto", choices=["auto", *READERS])
    p.add_argument("--labels", type=Path, help="annotation file (csv, coco, labelstudio, cvat) "
                                               "or folder (voc)")
    p.add_argument("--dataset", help="dataset name (default: the folder's name)")
    p.add_argument("--split", help="split of the folder's images (train, val, test, ...); "
                                   "images already in the catalog are moved to it, unless split "
                                   "folders or a split column say otherwise")
    p.add_argument("--annotator", help="whose labels these are (default: DATASET/given)")
    p.add_argument("--classes", help="comma-separated class list; other classes are skipped")
    p.add_argument("--workers", type=_positive, help="reader processes (default: one per core)")
    p.add_argument("--user", help="who ingests (a lead, once the catalog has accounts)")
    _add_engine_options(p, "read the images")

    p = add("demo", cmd_demo, "build the demo catalog (CIFAR-10 and BCCD, or offline MNIST)")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")

    p = add("agreement", cmd_agreement,
            "annotator agreement with confidence intervals, consensus and annotator quality")
    p.add_argument("--dataset", help="dataset (default: the first)")
    p.add_argument("--include-given", action="store_true",
                   help="count the dataset's given (imported) labels as one more annotator")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (images)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--save-consensus", action="store_true",
                   help="store the Dawid-Skene consensus for resolved labels")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for two objects to match")
    p.add_argument("--user", help="who stores the consensus (a lead, once the catalog has accounts)")

    p = add("duplicates", cmd_duplicates,
            "exact and near duplicates, their groups, and leakage between splits")
    p.add_argument("--dataset", help="dataset (default: the first)")
    p.add_argument("--method", default=None, choices=["phash", "dhash", "embedding"],
                   help="perceptual hash, or image embeddings (computed once, then cached beside "
                   "the catalog); default: the best on bench/embeddings.py")
    p.add_argument("--threshold", type=float,
                   help="largest distance: Hamming bits for hashes, 1 - cosine similarity for "
                   "embeddings (default: calibrated per method)")

    p = add("snapshot", cmd_snapshot, "name the current state of a dataset, or list snapshots")
    p.add_argument("--dataset", help="dataset (default: the first)")
    p.add_argument("--name", help="the new snapshot's name")
    p.add_argument("--list", action="store_true", help="list the dataset's snapshots")
    p.add_argument("--note", help="what this snapshot is for")
    p.add_argument("--author", help="who takes it")

    p = add("diff", cmd_diff, "labels added, removed and changed between two snapshots")
    p.add_argument("--dataset", help="dataset (default: the first)")
    p.add_argument("--from", dest="before", required=True, help="snapshot name")
    p.add_argument("--to", dest="after", help="snapshot name (default: now)")

    p = add("export", cmd_export, "export resolved labels (now or of a snapshot) with images")
    p.add_argument("--dataset", help="dataset (default: the first)")
    p.add_argument("--format", required=True,
                   choices=["coco", "voc", "yolo", "imagefolder", "csv", "parquet"])
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--snapshot", help="export this snapshot (default: now)")
    p.add_argument("--splits", help="comma-separated splits (default: all images)")
    p.add_argument("--include-excluded", action="store_true",
                   help="keep images excluded by duplicate resolution")
    p.add_argument("--model-labels", action="store_true",
                   help="let model labels take part (default: people's labels only)")
    p.add_argument("--images", choices=["copy", "link", "none"],
                   help="copy or symlink the images; none (csv, parquet only) leaves them in place "
                        "(default: copy; none for csv and parquet)")
    p.add_argument("--strip-exif", action="store_true",
                   help="copies without EXIF, GPS, XMP or IPTC metadata")
    p.add_argument("--no-weights", action="store_true", help="skip class_weights.csv")
    p.add_argument("--target", help="target class shares for weights and oversampling, "
                                    "e.g. RBC=1,WBC=1 (default: uniform)")
    p.add_argument("--oversample", action="store_true",
                   help="add augmented copies of minority-class train images up to the target")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")

    p = add("train", cmd_train, "train a micro-model on people's labels, evaluate it on "
                                "held-out labels and predict the unlabelled images")
    p.add_argument("--task", choices=["classify", "detect"], default="classify",
                   help="classify images (default) or detect boxes (trained on people's boxes)")
    p.add_argument("--images", type=int, help="detect: boxed images to train on; the rest "
                   "are held out (default: all but 20%%)")
    p.add_argument("--holdout-split", help="detect: evaluate on this split's boxed images")
    p.add_argument("--dataset", help="dataset (default: the first)")
    p.add_argument("--split", help="take training labels from this split (default: all)")
    p.add_argument("--classes", nargs="+", help="classes to learn (default: every class used)")
    p.add_argument("--per-class", type=int, help="people's labels per class to train on; the "
                   "rest are held out (default: all but 20%%)")
    p.add_argument("--find-more", metavar="CLASS", help="one class against every other")
    p.add_argument("--seconds", type=float, default=60, help="training time limit (default 60)")
    p.add_argument("--seed", type=int, default=0, help="label choice, weights, augmentation")
    p.add_argument("--weights", type=Path, help="pretrained backbone: a Sieve checkpoint, or a "
                   "torchvision resnet18 state dict with --arch resnet18")
    p.add_argument("--arch", choices=["patches", "cnn", "resnet18"], help="default: patches")
    p.add_argument("--image-size", type=int, help="images are squashed to this square "
                   "(default 32); detect: the long side images are resized to (default 256)")
    p.add_argument("--user", help="who trains (recorded on the run)")
    _add_engine_options(p, "classify: read the images and predict them")

    p = add("autolabel", cmd_autolabel, "write a run's confident predictions as model labels "
                                        "and queue the rest for review; or roll a run back")
    p.add_argument("--run", type=int, help="the model run to apply")
    p.add_argument("--threshold", type=float, help="lowest confidence written as a label")
    p.add_argument("--precision", type=float, help="instead of --threshold: the lowest "
                   "threshold reaching this precision on the run's held-out images")
    p.add_argument("--strategy", default="least-confidence",
                   choices=["least-confidence", "margin", "entropy"],
                   help="review queue order, most uncertain first")
    p.add_argument("--include-labelled", action="store_true", help="also label images people "
                   "labelled (a model label never overrides a person's)")
    p.add_argument("--rollback", type=int, metavar="ID", help="remove everything run ID wrote")
    p.add_argument("--user", help="who applies (recorded on the queue)")

    p = add("label-issues", cmd_label_issues, "people's labels that are probably wrong, by "
            "confident learning on out-of-sample predictions, most suspect first")
    p.add_argument("--dataset", help="dataset (default: the first)")
    p.add_argument("--split", help="labels to check (default: all)")
    p.add_argument("--train-split", help="score --split with a model trained on this split "
                   "(default: cross-training within --split)")
    p.add_argument("--folds", type=int, default=5, help="cross-training folds (default 5)")
    p.add_argument("--classes", nargs="+", help="classes to check (default: all)")
    p.add_argument("--seconds", type=float, help="time limit per model (default 60)")
    p.add_argument("--arch", choices=["patches", "cnn", "resnet18"], help="default: patches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", type=Path, help="also write the list to this CSV file")
    p.add_argument("--queue", action="store_true", help="send them to a review queue")
    p.add_argument("--limit", type=int, default=30, help="rows printed (default 30)")
    p.add_argument("--user", help="who asks (recorded on the queue)")
    _add_engine_options(p, "read the images (and, with --train-split, predict them)")

    p = add("user", cmd_user, "accounts: add, list, set-role, disable (a catalog without "
                              "accounts is in single-user mode)")
    p.add_argument("action", choices=["add", "list", "set-role", "disable"])
    p.add_argument("name", nargs="?", help="the account")
    p.add_argument("new_role", nargs="?", metavar="role", help="set-role: the new role")
    p.add_argument("--role", help="add: viewer, annotator, lead or admin")
    p.add_argument("--password-stdin", action="store_true",
                   help="add: read the password from standard input instead of generating one")
    p.add_argument("--user", help="the acting admin (needed once the catalog has accounts)")

    p = add("stats", cmd_stats, "images, unreadable files, classes and label counts")
    p.add_argument("--dataset", help="one dataset (default: all)")
    return parser


@contextmanager
def stdout_for_this_program_only() -> Iterator[None]:
    """Point file descriptor 1 at stderr while Python's `sys.stdout` keeps the real standard
    output. Ray's processes and its C++ core write notices to descriptor 1 (a node that died,
    a worker restarted), which would land inside a `--json` document. Nothing to do when
    `sys.stdout` is not descriptor 1 (captured, redirected in-process)."""
    try:
        ours = sys.stdout.fileno() == 1
    except (AttributeError, OSError, io.UnsupportedOperation):
        ours = False
    if not ours:
        yield
        return
    sys.stdout.flush()
    real, saved = os.dup(1), sys.stdout
    os.dup2(2, 1)
    sys.stdout = open(real, "w", encoding=saved.encoding, errors=saved.errors,  # noqa: SIM115
                      closefd=False)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = saved
        os.dup2(real, 1)
        os.close(real)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "engine", "local") == "ray":
            with stdout_for_this_program_only():
                return args.func(args)
        return args.func(args)
    except catalog.CatalogBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (catalog.CatalogError, FormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, RuntimeError, duckdb.InterruptException) as err:
        from core.jobs import interrupted

        if not interrupted(err):
            raise
        print(f"\ninterrupted{INTERRUPTED.get(args.func, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`... | head`) once the work was done;
        # during the work the progress bar stops drawing instead (`_progress_bar`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# what Ctrl-C leaves, where a command knows: said after "interrupted"
INTERRUPTED = {
    cmd_ingest: ": the images and labels written so far are kept; the same command again adds "
                "only what is missing",
    cmd_demo: ": the catalog was left as it was; `demo` again builds the demo from the start",
}

if __name__ == "__main__":
    sys.exit(main())
