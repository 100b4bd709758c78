"""`make bench`: the bundle's machinery measured against the standard alternatives.

    python benchmarks/bench.py --data-dir data            # the full run, under 15 minutes
    python benchmarks/bench.py --data-dir data --quick    # a reduced run while developing

Every figure comes from this run: contenders take turns on the same images and
cores (A B A B ...), medians of several repetitions are compared, and a missed
target is shown as missed. The table is printed and written to build/bench.json
together with every repetition, the CPU and the library versions.
"""
from __future__ import annotations

import argparse
import json
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
SECTIONS = ("q2", "q3", "fit", "quality", "smoke")
NOTEBOOKS = ("Q1/Q1.ipynb", "Q2/Q2.ipynb", "Q3/Q3.ipynb")  # smoke is measured once these exist
THREADS = 2

# Sizes of the full and the --quick run. The fit-overhead run is the quality
# section's first recipe: its epochs after the first are the repetitions.
FULL = {"q2_images": 20_000, "q2_repeats": 7, "q3_images": 2_560, "q3_repeats": 5,
        "train_images": 10_000, "val_images": 500, "epochs": 5, "fit_repeats": 4,
        "test_images": None}
QUICK = {"q2_images": 5_000, "q2_repeats": 3, "q3_images": 640, "q3_repeats": 2,
         "train_images": 1_280, "val_images": 256, "epochs": 2, "fit_repeats": 1,
         "test_images": 1_000}

TARGETS = {"q2": 15.0, "q3": 5.0, "fit": 0.05}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Measure the input pipelines, fit's overhead, quality at a fixed budget "
                    "and `make smoke` against the standard alternatives. Writes the figures "
                    "to --out.",
        epilog="--data-dir is an ordinary data_dir (make bench DATA_DIR=...): CIFAR-10 is "
               "found or downloaded there as the notebooks do. Offline, unpack the JPEG copy "
               "first: mkdir -p data && tar xJf ../shared/data/cifar10-jpeg.tar.xz -C data")
    parser.add_argument("--data-dir", default="data",
                        help="a data_dir holding CIFAR-10 as load_dataset finds it (default: data)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images, repetitions and epochs; skips make smoke")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                        help=f"run only these sections: {', '.join(SECTIONS)}")
    parser.add_argument("--recipes", type=Path,
                        help="JSON file {name: fit() keyword arguments} replacing the quality "
                             "section's two placeholder recipes (the first is the reference)")
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


def load_recipes(path: Path | None) -> dict:
    from benchmarks.quality import RECIPES

    recipes = json.loads(path.read_text()) if path else RECIPES
    if not isinstance(recipes, dict) or len(recipes) < 2:
        raise SystemExit(f"{path}: expected a JSON object of at least two recipes "
                         "{name: fit() keyword arguments}; the first is the reference")
    return recipes


def bench_fit(ds, sizes, recipes, trained: dict) -> tuple[dict, dict]:
    """fit vs the minimal loop, on the first recipe's quality run (kept in `trained`)."""
    from benchmarks.loop import compare_fit_overhead
    from benchmarks.quality import split

    name, recipe = next(iter(recipes.items()))
    idx = split(ds, train_images=sizes["train_images"], val_images=sizes["val_images"])
    started = time.perf_counter()
    result, model, history = compare_fit_overhead(
        ds.train_images[idx["train"]], ds.train_labels[idx["train"]],
        ds.train_images[idx["val"]], ds.train_labels[idx["val"]], mean=ds.mean, std=ds.std,
        run_dir=ROOT / "build" / "bench-runs" / "fit_overhead", recipe=recipe,
        epochs=sizes["epochs"], repeats=sizes["fit_repeats"])
    trained[name] = (model, history, time.perf_counter() - started)
    overhead = result["overhead"]
    note = (f"alexnet (CIFAR), {result['train_images']:,} train images + {result['eval_images']:,} "
            f"held-out images per epoch, batch 128, recipe {name!r}; fit: metrics, a "
            f"{result['checkpoint_mb']:.0f} MB checkpoint (fsync) and history.json per epoch; "
            "minimal: forward/loss/backward/step + a bare forward over the held-out batches, "
            f"same weights and batches; {result['repeats']} alternating epoch(s) after 1 warm-up "
            "each; s/epoch: medians; ratio: median of the paired epochs' ratios")
    return row("Training loop: fit vs minimal loop, s/epoch",
               f"{result['fit_seconds_per_epoch']:.1f} s", f"{result['minimal_seconds_per_epoch']:.1f} s",
               f"{overhead:+.1%}", f"<= +{TARGETS['fit']:.0%}", overhead <= TARGETS["fit"], note), result


def bench_quality(ds, sizes, recipes, trained: dict) -> tuple[dict, dict]:
    from benchmarks.quality import compare_recipes

    result = compare_recipes(ds, recipes=recipes, train_images=sizes["train_images"],
                             val_images=sizes["val_images"], epochs=sizes["epochs"],
                             test_images=sizes["test_images"], trained=trained,
                             run_root=ROOT / "build" / "bench-runs" / "quality",
                             log=lambda line: print(line, flush=True))
    names = list(result["recipes"])
    ref, best = result["recipes"][names[0]], result["recipes"][names[-1]]
    diff = best["test_accuracy"] - ref["test_accuracy"]
    described = "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in r["recipe"].items())
                          for k, r in result["recipes"].items())
    note = (f"alexnet (CIFAR), the same {result['train_images']:,} train images and initial "
            f"weights, {result['epochs']} epochs, tested once on {ref['test_images']:,} test "
            f"images (of the data_dir's CIFAR-10); {described}")
    return row(f"Quality: {names[-1]} vs {names[0]} recipe, test accuracy",
               f"{best['test_accuracy']:.2%}", f"{ref['test_accuracy']:.2%}",
               f"{diff * 100:+.1f} pts", "report", None, note), result


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
    if set(sections) & {"q2", "q3", "fit", "quality"}:
        ds = load_cifar(args.data_dir)
        print(f"data: {ds!r}", flush=True)

    recipes = load_recipes(args.recipes)
    trained: dict = {}  # recipe name -> (model, history, seconds), shared by fit and quality
    rows, details = [], {}
    steps = {"q2": lambda: bench_pipelines(ds, sizes, "q2"),
             "q3": lambda: bench_pipelines(ds, sizes, "q3"),
             "fit": lambda: bench_fit(ds, sizes, recipes, trained),
             "quality": lambda: bench_quality(ds, sizes, recipes, trained),
             "smoke": lambda: bench_smoke(args.data_dir)}
    for name in SECTIONS:
        if name in sections and name in steps:
            t = time.perf_counter()
            print(f"[{name}] running ...", flush=True)
            r, detail = steps[name]()
            detail["section_seconds"] = time.perf_counter() - t
            rows.append(r)
            details[name] = detail
            print(f"[{name}] {r['ours']} vs {r['standard']} ({r['ratio']}) in "
                  f"{detail['section_seconds']:.0f} s", flush=True)

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
