"""`make bench`: the bundle's machinery measured against the standard alternatives.

    python benchmarks/bench.py --data-dir data            # the full run, about 2.5 hours
    python benchmarks/bench.py --data-dir data --quick    # a reduced run while developing
    python benchmarks/bench.py --only quality --train-images 1000   # quality, smaller budget
    python benchmarks/bench.py --only horizon   # the lr horizon sweep alone (about 1.5 h)

Every figure comes from this run: contenders take turns on the same images and
cores (A B A B ...), medians of several repetitions are compared, and a missed
target is shown as missed. The quality section trains each Q2 network with the
notebook's recipe and with the reference recipe (kuangliu/pytorch-cifar) at the
quick profile's budget, once each: most of the full run's time. The table is
printed and written to build/bench.json together with every repetition, the CPU
and the library versions. The horizon section (benchmarks/horizon.py) sweeps the
SGD peak rate over growing horizons: the evidence behind the full run's rates.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bundle importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import cpu_description  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("q2", "q3", "fit", "quality", "smoke", "horizon")
NOTEBOOKS = ("Q1/Q1.ipynb", "Q2/Q2.ipynb", "Q3/Q3.ipynb")  # smoke is measured once these exist
THREADS = 2

# Sizes of the full and the --quick run. The quality budget (train_images, epochs,
# test_images) of the full run is the quick profile's, read by quality_budget; --quick
# shrinks it to a smoke check. The fit-overhead run is the quality section's AlexNet
# reference run: its epochs after the first are the repetitions.
FULL = {"q2_images": 20_000, "q2_repeats": 7, "q3_images": 2_560, "q3_repeats": 5,
        "val_images": 500, "fit_repeats": 4}
QUICK = {"q2_images": 5_000, "q2_repeats": 3, "q3_images": 640, "q3_repeats": 2,
         "val_images": 256, "fit_repeats": 1,
         "train_images": 500, "epochs": 2, "test_images": 500}

TARGETS = {"q2": 15.0, "q3": 5.0, "fit": 0.05, "checkpoint": 0.05}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Measure the input pipelines, fit's overhead, each Q2 recipe's quality at "
                    "the quick profile's budget and `make smoke` against the standard "
                    "alternatives. Writes the figures to --out.",
        epilog="--data-dir is an ordinary data_dir (make bench DATA_DIR=...): CIFAR-10 is "
               "found or downloaded there as the notebooks do. Offline, unpack the JPEG copy "
               "first: mkdir -p data && tar xJf ../shared/data/cifar10-jpeg.tar.xz -C data")
    parser.add_argument("--data-dir", default="data",
                        help="a data_dir holding CIFAR-10 as load_dataset finds it (default: data)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images, repetitions and epochs; skips make smoke")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                        help=f"run only these sections: {', '.join(SECTIONS)}")
    parser.add_argument("--train-images", type=int, metavar="N",
                        help="quality and fit: training images per run instead of the quick "
                             "profile's (a smaller budget when time is short)")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="quality and fit: epochs per run instead of the quick profile's")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench.json",
                        help="where the figures are written (default: build/bench.json)")
    return parser.parse_args(argv)


def load_cifar(data_dir: str):
    from common.data import DatasetNotFoundError, load_dataset
    from common.config import resolve_path

    try:
        return load_dataset("cifar10", resolve_path(data_dir), download=True)
    except DatasetNotFoundError as err:
        print(err, file=sys.stderr)
        print("\nThe benchmark needs CIFAR-10. On a machine without internet, point it at the "
              "JPEG copy:\n  mkdir -p data && tar xJf ../shared/data/cifar10-jpeg.tar.xz -C data\n"
              "then run `make bench` (or `make bench DATA_DIR=<that folder>`).", file=sys.stderr)
        sys.exit(2)


def row(measure, ours, standard, ratio, target, met, note) -> dict:
    return {"measure": measure, "ours": ours, "standard": standard, "ratio": ratio,
            "target": target, "met": met, "note": note}


def bench_pipelines(ds, sizes, section: str) -> tuple[dict, dict]:
    from benchmarks.pipelines import compare_pipelines

    q3 = section == "q3"
    n = sizes[f"{section}_images"]
    result = compare_pipelines(ds.train_images[:n], ds.train_labels[:n], mean=ds.mean, std=ds.std,
                               batch_size=128, image_size=224 if q3 else None,
                               workers=2, repeats=sizes[f"{section}_repeats"])
    target = TARGETS[section]
    what = ("Q3 input: crop+flip, resize to 224, normalise" if q3
            else "Q2 input: crop+flip, normalise (32x32)")
    note = (f"{n:,} CIFAR-10 images, batch 128, {result['repeats']} interleaved epochs after 1 "
            f"warm-up, median; ours: DeviceBatches on CPU, {THREADS} torch threads, NCHW "
            "output like the DataLoader's; standard: DataLoader, 2 persistent workers x 1 torch "
            "thread, PIL "
            + ("RandomCrop/Flip/Resize(224)/ToTensor/Normalize" if q3
               else "RandomCrop/Flip/ToTensor/Normalize"))
    ratio = result["ratio"]
    return row(what, f"{result['ours_images_per_s']:,.0f} img/s",
               f"{result['standard_images_per_s']:,.0f} img/s", f"{ratio:.1f}x",
               f">= {target:g}x", ratio >= target, note), result


def quality_budget(config: dict, quick: bool, train_images: int | None = None,
                   epochs: int | None = None) -> dict:
    """Training images, epochs and test images of each quality run: the quick profile's
    (`config`: the notebook's parameters under it), --quick's smoke sizes, or the
    command line's train_images/epochs on top of either."""
    budget = ({k: QUICK[k] for k in ("train_images", "epochs", "test_images")} if quick else
              {"train_images": config["train_images"], "epochs": config["epochs"],
               "test_images": config["eval_images"] or None})
    for key, value in (("train_images", train_images), ("epochs", epochs)):
        if value is not None:
            if value < 1:
                raise SystemExit(f"--{key.replace('_', '-')} {value}: expected a positive number")
            budget[key] = value
    if not budget["train_images"]:
        raise SystemExit("the quick profile trains on every image (train_images: 0); the bench "
                         "needs a CPU budget: pass --train-images")
    budget["source"] = ("--quick" if quick else "profiles/quick.yaml") + (
        " with --train-images/--epochs" if train_images or epochs else "")
    return budget


def bench_fit(ds, sizes, plan, trained: dict) -> tuple[list[dict], dict]:
    """fit vs the minimal loop, on the quality section's AlexNet reference run (kept in
    `trained`): AlexNet is the cheapest network, and its reference run is shared by
    the three Q2(b) rows."""
    from benchmarks.loop import compare_fit_overhead
    from benchmarks.quality import REFERENCE_SOURCE, run_key, split

    item = next((i for i in plan if i["model"] == "alexnet"), plan[0])
    idx = split(ds, train_images=sizes["train_images"], val_images=sizes["val_images"],
                seed=sizes["seed"])
    epochs = sizes["epochs"]
    if epochs < 2:
        raise SystemExit("the fit-overhead section needs at least 2 epochs (1 warm-up); "
                         "pass --epochs 2 or more, or leave out the fit section")
    result, model, history = compare_fit_overhead(
        ds.train_images[idx["train"]], ds.train_labels[idx["train"]],
        ds.train_images[idx["val"]], ds.train_labels[idx["val"]], mean=ds.mean, std=ds.std,
        run_dir=ROOT / "build" / "bench-runs" / "fit_overhead", recipe=item["reference"],
        epochs=epochs, repeats=min(sizes["fit_repeats"], epochs - 1),
        batch_size=item["reference_batch_size"], model_name=item["model"], seed=sizes["seed"])
    trained[run_key(item, "reference")] = (model, history)
    overhead = result["overhead"]
    note = (f"{item['model']} (CIFAR), {result['train_images']:,} train images + "
            f"{result['eval_images']:,} held-out images per epoch, batch "
            f"{item['reference_batch_size']}, the {REFERENCE_SOURCE} recipe (the quality "
            "section's reference run); fit: metrics, a "
            f"{result['checkpoint_mb']:.0f} MB checkpoint (fsync) at most 5% of the time "
            "(fit's checkpoint_overhead) and history.json per epoch; "
            "minimal: forward/loss/backward/step + a bare forward over the held-out batches, "
            f"same weights and batches; {result['repeats']} alternating epoch(s) after 1 warm-up "
            "each; s/epoch: medians; ratio: median of the paired epochs' ratios")
    spaced, every = result["checkpoint_share_spaced"], result["checkpoint_share_every_epoch"]
    checkpoints = row(
        "Checkpoints: writes as a share of training time", f"{spaced:.1%}", f"{every:.1%}",
        f"{spaced / every:.2f}x" if every else "n/a", f"<= {TARGETS['checkpoint']:.0%}",
        spaced <= TARGETS["checkpoint"],
        f"the same run: {result['checkpoint_writes']} resumable checkpoint(s) of "
        f"{result['checkpoint_mb']:.0f} MB written (fsync) in {result['epochs']} epochs, "
        "spaced by fit's checkpoint_overhead (ours; every epoch when a write costs under 5% "
        "of one), against a write after every epoch (the PyTorch examples), costed from this "
        "run's median write; the finished "
        f"run keeps a {result['final_checkpoint_mb']:.0f} MB final checkpoint")
    return [row("Training loop: fit vs minimal loop, s/epoch",
                f"{result['fit_seconds_per_epoch']:.1f} s", f"{result['minimal_seconds_per_epoch']:.1f} s",
                f"{overhead:+.1%}", f"<= +{TARGETS['fit']:.0%}", overhead <= TARGETS["fit"], note),
            checkpoints], result


# Ours must be no worse than the reference recipe on every row: a recipe chosen for 40
# epochs that loses to the copied one at the quick budget is not sound there.
QUALITY_TARGET = "ours >= reference"


def quality_rows(result: dict, plan: list[dict]) -> list[dict]:
    """One table row per plan item: ours vs the reference, test accuracy and seconds."""
    from benchmarks.quality import REFERENCE_SOURCE, describe

    items = {i["name"]: i for i in plan}
    runs, rows, seen = result["runs"], [], set()

    def cell(run):
        stopped = " (diverged)" if run["stopped"] else ""
        return f"{run['test_accuracy']:.1%}{stopped} in {run['seconds']:.0f} s"

    for r in result["rows"]:
        ours, ref, item = runs[r["ours"]], runs[r["reference"]], items[r["name"]]
        note = (f"the same {result['train_images']:,} train images, initial weights and crop+flip "
                f"batches, {result['epochs']} epochs, tested once on {ours['test_images']:,} "
                f"class-stratified test images; s: fit's train + held-out time; ours (the notebook's "
                f"spec): {describe(item['ours'], item['ours_batch_size'])}; reference "
                f"({REFERENCE_SOURCE}): {describe(item['reference'], item['reference_batch_size'])}")
        if r["reference"] in seen:
            note += " (the same reference run as above)"
        seen.add(r["reference"])
        rows.append(row(f"Quality: {r['label']} vs reference, test accuracy", cell(ours), cell(ref),
                        f"{r['difference'] * 100:+.1f} pts", QUALITY_TARGET,
                        r["difference"] >= 0, note))
    return rows


def bench_quality(ds, sizes, plan, trained: dict) -> tuple[list[dict], dict]:
    from benchmarks.quality import compare_networks

    print(f"  target: {QUALITY_TARGET} for every network (test accuracy at "
          f"{sizes['train_images']:,} train images x {sizes['epochs']} epochs, "
          f"{sizes['source']})", flush=True)
    result = compare_networks(ds, plan, train_images=sizes["train_images"],
                              val_images=sizes["val_images"], epochs=sizes["epochs"],
                              test_images=sizes["test_images"], trained=trained,
                              seed=sizes["seed"], run_root=ROOT / "build" / "bench-runs" / "quality",
                              log=lambda line: print(line, flush=True))
    result["budget_source"] = sizes["source"]
    result["plan"] = plan
    result["target"] = QUALITY_TARGET + " for every row"
    return quality_rows(result, plan), result


def bench_horizon(ds, quick: bool) -> tuple[list[dict], dict]:
    """VGG16's first full-recipe epochs at the notebook's full peak rate (does the warm-up
    hold?), then the lr horizon sweep (benchmarks/horizon.py). --quick: AlexNet for the
    warm-up, two small horizons, two rates."""
    from benchmarks import horizon

    run_root = ROOT / "build" / "bench-runs" / "horizon"
    log = lambda line: print(line, flush=True)  # noqa: E731
    config, _ = horizon.full_recipe()
    warm = horizon.warmup_check(ds, lr=config["lr_sgd"], run_root=run_root, log=log,
                                **({"epochs_shown": 1, "val_images": 500, "model": "alexnet",
                                    "train_images": 2_000} if quick else {}))
    kw = ({"horizons": ((1_000, 2), (2_000, 2)), "rates": (0.01, 0.1), "val_images": 500}
          if quick else {})
    result = horizon.sweep(ds, run_root=run_root, log=log, **kw)
    for line in horizon.table(result):
        print(line, flush=True)
    result["warmup_check"] = warm
    rows = [row(f"Horizon: best SGD peak lr, {r['horizon']} ({r['steps']} steps)",
                f"lr {result['best'][r['horizon']]:g}", "-", "-", "-", None,
                "validation accuracy per rate: " + ", ".join(
                    f"{x['lr']:g}: {x['val_accuracy']:.1%}" for x in result["runs"]
                    if x["horizon"] == r["horizon"]) + f" ({result['val_images']:,} images)")
            for r in result["runs"] if r["lr"] == result["rates"][0]]
    losses = ", ".join(f"{x:.3f}" for x in warm["history"].get("train_loss", []))
    rows.append(row(f"Horizon: {warm['model']} warm-up at the full rate {warm['lr']:g}, first "
                    f"epochs of {warm['epochs_of']}", "stable" if warm["stable"] else "UNSTABLE",
                    "-", "-", "finite losses", warm["stable"],
                    f"{warm['train_images']:,} train images, warm-up {warm['warmup_epochs']} "
                    f"epoch(s); train losses per epoch: {losses}"))
    return rows, result


def smoke_command(data_dir: str, scratch: Path) -> list[str]:
    """`make smoke`'s own command (read with make -n, so it follows the Makefile),
    pointed at a scratch build and runs folder: a timed smoke run neither reuses
    finished runs (which would make it look fast) nor overwrites build/."""
    out = subprocess.run(["make", "--no-print-directory", "-n", "smoke", f"DATA_DIR={data_dir}"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if "common.tools.run" in line]
    if len(lines) != 1:
        raise RuntimeError(f"expected one common.tools.run command from `make -n smoke`, got: {out!r}")
    return shlex.split(lines[0]) + ["--build-dir", str(scratch / "build"),
                                    "--runs-dir", str(scratch / "runs")]


def bench_smoke(data_dir: str) -> tuple[dict, dict]:
    what = "make smoke: every notebook end to end, wall time"
    missing = [nb for nb in NOTEBOOKS if not (ROOT / nb).is_file()]
    stamp, requirements = ROOT / ".venv" / ".requirements-stamp", ROOT / "requirements.txt"
    why = None
    if missing:
        why = f"{', '.join(missing)} not written yet"
    elif not stamp.is_file() or stamp.stat().st_mtime < requirements.stat().st_mtime:
        why = "the environment is not built or is out of date (run `make venv` first)"
    if why:
        return row(what, f"not measured: {why}", "-", "-", "-", None, ""), {"measured": False, "why": why}
    scratch = ROOT / "build" / "bench-runs" / "smoke"
    shutil.rmtree(scratch, ignore_errors=True)
    command = smoke_command(data_dir, scratch)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    ok = proc.returncode == 0
    if ok:
        shutil.rmtree(scratch, ignore_errors=True)  # keep a failed run's notebooks to look at
    result = {"measured": True, "seconds": seconds, "returncode": proc.returncode,
              "command": command, "output_tail": (proc.stdout + proc.stderr)[-3000:]}
    notebooks = [arg for arg in command if arg.endswith(".ipynb")]
    return row(what, f"{seconds:.0f} s" if ok else f"FAILED (exit {proc.returncode}) after {seconds:.0f} s",
               "-", "-", "-", None,
               f"{len(notebooks)} notebooks ({', '.join(notebooks)}); one run of `make smoke`'s "
               "command with a fresh scratch --build-dir/--runs-dir (no finished runs reused); "
               "environment already built"), result


def print_table(rows: list[dict], log=print) -> None:
    cols = [("measure", "measure"), ("ours", "ours"), ("standard", "standard"), ("ratio", "ratio"),
            ("target", "target"), ("met", "met?")]

    def cell(r, key):
        if key == "met":
            return {True: "yes", False: "NO", None: "-"}[r["met"]]
        return str(r[key])

    widths = {k: max(len(title), *(len(cell(r, k)) for r in rows)) for k, title in cols}
    line = "  ".join(f"{title:<{widths[k]}}" for k, title in cols)
    log(line)
    log("-" * len(line))
    for r in rows:
        log("  ".join(f"{cell(r, k):<{widths[k]}}" for k, _ in cols))
    log("")
    log("How each figure was measured:")
    for r in rows:
        if r["note"]:
            log(f"  {r['measure']}: {r['note']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # libgomp's threads spin while they wait for work. When other jobs share the two
    # cores, our two threads then spin against each other: the same 20,000-image
    # epoch measured 0.08 s to 3.7 s, with the CPU time equal to the wall time.
    # Passive waiting (sleep) removes that; read by libgomp when torch loads, so it
    # is set before the import. A value already in the environment is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(THREADS)
    sizes = QUICK if args.quick else FULL
    sections = args.only or [s for s in SECTIONS if not (args.quick and s == "smoke")]
    env = cpu_description()
    started = time.perf_counter()
    print(f"CPU: {env['cpu_model']}, {env['logical_cpus']} logical CPUs; torch {env['torch']} "
          f"with {env['torch_threads']} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
          f"1-min load average at start "
          f"{env['load_average_1min']}" + ("; QUICK run (reduced sizes)" if args.quick else ""),
          flush=True)

    ds = None
    if set(sections) & {"q2", "q3", "fit", "quality", "horizon"}:
        ds = load_cifar(args.data_dir)
        print(f"data: {ds!r}", flush=True)

    plan = []
    if set(sections) & {"fit", "quality"}:
        from benchmarks.quality import q2_config, quality_plan

        config = q2_config()  # the Q2 notebook's parameters under the quick profile
        plan = quality_plan(config)
        sizes = {**sizes, **quality_budget(config, args.quick, args.train_images, args.epochs),
                 "seed": config["seed"]}
    trained: dict = {}  # run_key -> (model, history), shared by fit and quality
    rows, details = [], {}
    steps = {"q2": lambda: bench_pipelines(ds, sizes, "q2"),
             "q3": lambda: bench_pipelines(ds, sizes, "q3"),
             "fit": lambda: bench_fit(ds, sizes, plan, trained),
             "quality": lambda: bench_quality(ds, sizes, plan, trained),
             "smoke": lambda: bench_smoke(args.data_dir),
             "horizon": lambda: bench_horizon(ds, args.quick)}
    for name in SECTIONS:
        if name in sections and name in steps:
            t = time.perf_counter()
            print(f"[{name}] running ...", flush=True)
            made, detail = steps[name]()
            detail["section_seconds"] = time.perf_counter() - t
            made = made if isinstance(made, list) else [made]  # quality: one row per network
            rows.extend(made)
            details[name] = detail
            for r in made:
                print(f"[{name}] {r['ours']} vs {r['standard']} ({r['ratio']})", flush=True)
            print(f"[{name}] done in {detail['section_seconds']:.0f} s", flush=True)

    env["load_average_1min_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    env["wall_seconds"] = time.perf_counter() - started
    if rows:
        print(f"\nMeasured in this run ({'quick' if args.quick else 'full'}), "
              f"{time.strftime('%Y-%m-%d %H:%M')}, CPU {env['cpu_model']}, "
              f"torch threads {env['torch_threads']}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
              f"load average {env['load_average_1min']} "
              f"-> {env['load_average_1min_at_end']}:\n")
        print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from common.config import environment_info
    from common.files import write_json

    write_json(args.out, {"quick": args.quick, "environment": {**environment_info(), **env},
                          "sizes": sizes, "rows": rows, "details": details})
    print(f"\nwrote {args.out} ({env['wall_seconds'] / 60:.1f} min in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
