"""`make gpu-check`: the one script to run on a CUDA machine.

    python benchmarks/gpu_check.py --data-dir data                  # on the GPU
    python benchmarks/gpu_check.py --data-dir data --no-download --minutes 4 --out /tmp/g.json
    python benchmarks/gpu_check.py --device cpu --max-images 200 --batch-size 8 \\
        --image-size 64 --warmup-steps 1 --steps 1 --epochs 2 --minutes 0.01   # code path, CPU

Two parts, with the notebooks' own settings (read from their parameters cells):

1. Speed: every planned model at its input size, the Q2 networks (vgg16, resnet18,
   alexnet at 32 px, Q2's batch_size) and the Q3 torchvision models (tv_alexnet,
   tv_resnet18, tv_vgg16 at Q3's image_size, random weights): a few warm-up steps,
   then timed optimiser steps and evaluation batches (at the notebooks' held-out
   batch sizes: 4x Q2's, 2x Q3's on a GPU) with the precision, fused kernels and
   channels_last fit uses on the device (common.hardware). Images per second, step
   times, peak memory.
2. Quality: Q2(a)'s ResNet18 recipe on the full training set with common.train.fit,
   evaluated on the test set every epoch, for as many of its 40 epochs as fit in
   --minutes. The schedule stays the 40-epoch one, so the accuracy after k epochs
   is that of epoch k of the real run, not that of a shorter run.

Everything goes to build/gpu_check.json (rewritten after each part and each epoch,
so a run cut short keeps what it measured) and a readable summary is printed.

It needs torch, torchvision and numpy only (a lent GPU machine has no papermill,
Jupyter or YAML): the parameters cells are read with json and ast here rather than
through common.tools.run, which imports papermill.
"""
from __future__ import annotations

import argparse
import ast
import gc
import itertools
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bundle importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402

from common.batches import DeviceBatches  # noqa: E402
from common.config import seed_everything  # noqa: E402
from common.data import load_dataset, stratified_indices  # noqa: E402
from common.files import write_json  # noqa: E402
from common.hardware import EVAL_BATCH_MULTIPLE, hardware_for  # noqa: E402
from common.models import build_model, count_parameters  # noqa: E402
from common.optim import make_optimizer  # noqa: E402
from common.recipes import check_q2_config, q2_specs  # noqa: E402
from common.train import evaluate, fit, train_one_epoch  # noqa: E402
from common.transfer import normalisation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
Q2_NOTEBOOK, Q3_NOTEBOOK = ROOT / "Q2" / "Q2.ipynb", ROOT / "Q3" / "Q3.ipynb"
Q2_MODELS = ("vgg16", "resnet18", "alexnet")
Q3_MODELS = ("tv_alexnet", "tv_resnet18", "tv_vgg16")
RECIPE_MODEL = "resnet18"  # the Q2(a) run trained in part 2
NO_CUDA_EXIT = 2


def notebook_parameters(notebook: Path) -> dict:
    """The parameters cell's constants, as common.tools.run.notebook_defaults reads
    them, with json and ast only."""
    nb = json.loads(Path(notebook).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value)
            for node in ast.parse("".join(cell["source"])).body}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description="Time every Q2/Q3 model on a CUDA GPU, then train Q2(a)'s ResNet18 recipe "
                    "for --minutes; writes --out. Options below the defaults change what is "
                    "measured and are recorded as overrides.")
    p.add_argument("--data-dir", default="data", help="where load_dataset finds CIFAR-10, "
                   "e.g. an image-folder copy <dir>/cifar10-jpeg/{train,test}/<class>/*.jpg")
    p.add_argument("--no-download", action="store_true", help="never touch the network")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to test "
                   "the code path on a CPU with tiny sizes")
    p.add_argument("--minutes", type=float, default=6.0,
                   help="wall-clock budget of the training part (default 6)")
    p.add_argument("--out", default=str(ROOT / "build" / "gpu_check.json"))
    p.add_argument("--runs-dir", default=str(ROOT / "build" / "gpu-check-runs"))
    p.add_argument("--models", default=",".join(Q2_MODELS + Q3_MODELS),
                   help="comma-separated models to time (default: all six); empty: none")
    p.add_argument("--no-train", action="store_true", help="skip the training part")
    p.add_argument("--lrs", type=lambda v: [float(x) for x in v.split(",")], default=[],
                   help="also train the recipe at these SGD peak rates, e.g. 0.05,0.1: the full "
                        "schedule at each, --minutes each (the horizon question answered on "
                        "the real run; the notebook's rate is always trained first)")
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps per model (default 20)")
    p.add_argument("--batch-size", type=int, help="override both notebooks' batch_size")
    p.add_argument("--image-size", type=int, help="override Q3's image_size")
    p.add_argument("--epochs", type=int, help="override Q2's epochs (the schedule's length)")
    p.add_argument("--max-images", type=int, default=0,
                   help="class-stratified subsets of at most this many training and test "
                        "images (0: all; for CPU tests)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.steps < 1 or args.warmup_steps < 1:
        p.error("--minutes must be positive, --steps and --warmup-steps at least 1 (the warm-up "
                "absorbs cuDNN's autotuning)")
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(Q2_MODELS + Q3_MODELS))
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; choose from "
                f"{', '.join(Q2_MODELS + Q3_MODELS)}")
    return args


def require_device(name: str) -> torch.device:
    """The device, or exit at once with the problem and the fix: without CUDA the
    numbers would be a CPU's, which is not what this check is for."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
        sys.stderr.write(
            f"gpu_check: CUDA is not available: {why}.\n"
            "This check measures a CUDA GPU. Fix: run it on the CUDA machine "
            "(make gpu-check DATA_DIR=<data dir>), or to test the code path on this CPU pass "
            "--device cpu with tiny sizes, e.g. --device cpu --max-images 200 --batch-size 8 "
            "--image-size 64 --warmup-steps 1 --steps 1 --epochs 2 --minutes 0.01\n")
        raise SystemExit(NO_CUDA_EXIT)
    return device


def _question(model: str) -> str:
    return "Q3" if model.startswith("tv_") else "Q2"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "device_type": device.type, "device_name": f"CPU ({platform.machine()})",
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))
    hw = hardware_for(device)
    info.update(hardware=hw.name, precision=hw.provenance(True, True)["precision"])
    return info


# --- part 1: images per second of every model ------------------------------------------

def time_model(name: str, ds, pool: torch.Tensor, *, device: torch.device, batch_size: int,
               image_size: int | None, warmup: int, steps: int) -> dict:
    """Warm-up then timed training steps (train_one_epoch, as fit runs them) and
    evaluation batches (evaluate, at the notebook's held-out batch size), on
    device-resident batches augmented and resized there, so the figures include the
    input pipeline fit sees. Synchronised only around the timed regions. `pool`: the
    training images to draw the batches from. The device's choices (precision,
    kernels, layout) are common.hardware's, with the notebooks' amp and channels_last."""
    cuda, hw, question = device.type == "cuda", hardware_for(device), _question(name)
    dtype, nhwc = hw.autocast_dtype(True), hw.use_channels_last(True)
    sizes = {"train": batch_size,
             "eval": hw.eval_batch_size(batch_size, EVAL_BATCH_MULTIPLE[question])}
    # Each question's normalisation: Q3's models take the ImageNet weights' constants.
    mean, std = normalisation(name) if name.startswith("tv_") else (ds.mean, ds.std)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = build_model(name).to(device)
    if nhwc:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer("sgd", model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                         weight_decay=5e-4, fused=hw.fused)
    scaler = hw.grad_scaler(True)
    idx = pool[torch.arange((warmup + steps) * max(sizes.values())) % len(pool)]  # repeats

    def batches(label: str):
        return iter(DeviceBatches(ds.train_images[idx], ds.train_labels[idx],
                                  batch_size=sizes[label], device=device,
                                  train=label == "train", mean=mean, std=std,
                                  image_size=image_size, channels_last=nhwc, drop_last=True))

    def train(it, n):
        train_one_epoch(model, itertools.islice(it, n), opt, criterion=nn.CrossEntropyLoss(),
                        scaler=scaler, device=device, dtype=dtype, channels_last=nhwc)

    def infer(it, n):
        evaluate(model, itertools.islice(it, n), device, True, channels_last=True)

    result = {"model": name, "question": question,
              "input_size": image_size or ds.train_images.shape[-1], "batch_size": batch_size,
              "eval_batch_size": sizes["eval"], "parameters": count_parameters(model),
              "warmup_steps": warmup, "timed_steps": steps}
    for label, run in (("train", train), ("eval", infer)):
        it = batches(label)
        run(it, warmup)  # cuDNN autotuning, allocator growth, the padded-crop cache
        sync(device)
        started = time.perf_counter()
        run(it, steps)
        sync(device)
        seconds = time.perf_counter() - started
        result[f"{label}_img_per_s"] = steps * sizes[label] / seconds
        result[f"{label}_step_ms"] = 1000 * seconds / steps
    result["peak_memory_gib"] = (torch.cuda.max_memory_allocated(device) / 2**30) if cuda else None
    del model, opt
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


# --- part 2: Q2(a)'s ResNet18 recipe within a time budget ------------------------------

class OutOfTime(Exception):
    """Raised from fit's on_epoch_end, after the epoch's checkpoint is written."""


def train_recipe(ds, train_idx, test_idx, q2: dict, *, device: torch.device, minutes: float,
                 runs_dir: Path, record: dict, save) -> None:
    """fit the (a) spec of RECIPE_MODEL with the full schedule; stop at the last epoch
    boundary the budget allows. Fills `record` as it goes and calls save() after
    each epoch."""
    spec = next(s for s in q2_specs(q2)["a"] if s["model"] == RECIPE_MODEL)
    hw = hardware_for(device)

    def batches(images, labels, train):  # as the Q2 notebook builds them
        size = q2["batch_size"] if train else hw.eval_batch_size(q2["batch_size"],
                                                                 EVAL_BATCH_MULTIPLE["Q2"])
        return DeviceBatches(images, labels, batch_size=size, device=device, train=train,
                             mean=ds.mean, std=ds.std, seed=q2["seed"],
                             channels_last=hw.use_channels_last(q2["channels_last"]))

    train_b = batches(ds.train_images[train_idx], ds.train_labels[train_idx], True)
    test_b = batches(ds.test_images[test_idx], ds.test_labels[test_idx], False)
    options = {"epochs": q2["epochs"], "amp": q2["amp"], "channels_last": q2["channels_last"],
               **spec["fit"]}
    budget_s, epochs = 60 * minutes, q2["epochs"]
    record.update(run=spec["name"], model=RECIPE_MODEL, fit=options, schedule_epochs=epochs,
                  minutes_budget=minutes, train_images=len(train_idx), test_images=len(test_idx),
                  epochs_run=0, per_epoch=[], stopped_by=None)
    started = last = time.perf_counter()

    def on_epoch_end(epoch: int, history: dict) -> None:
        nonlocal last
        now = time.perf_counter()
        wall, last = now - last, now  # the epoch, its evaluation and checkpoint
        i = epoch - 1
        record["per_epoch"].append({
            "epoch": epoch, "wall_seconds": wall, "fit_seconds": history["seconds"][i],
            "lr": history["lr"][i], "train_loss": history["train_loss"][i],
            "train_accuracy": history["train_accuracy"][i],
            "test_loss": history["eval_loss"][i], "test_accuracy": history["eval_accuracy"][i]})
        record["epochs_run"] = epoch
        if epoch == 1:
            # The first epoch includes cuDNN's autotuning: the estimate errs on the safe side.
            record["first_epoch_seconds"] = wall
            record["estimated_epochs_in_budget"] = min(epochs, int(budget_s // wall))
        save()
        print(f"    [{now - started:.1f} s of {budget_s:.1f} s] epoch {epoch}/{epochs} "
              f"test accuracy {history['eval_accuracy'][i]:.4f}", flush=True)
        # Another epoch only if it fits, judged by the latest epoch's wall time.
        if epoch < epochs and now - started + wall > budget_s:
            raise OutOfTime

    seed_everything(q2["seed"])  # the notebook's initial weights (experiments.train_or_reuse)
    model = build_model(RECIPE_MODEL)
    try:
        history = fit(model, train_b, test_b, run_dir=runs_dir / spec["name"], eval_split="test",
                      device=device, force=True, on_epoch_end=on_epoch_end,
                      config={"model": RECIPE_MODEL, "smoke": False, "seed": q2["seed"],
                              "train_images": len(train_idx), "gpu_check": True}, **options)
        stopped = history["stopped"]
        record["stopped_by"] = f"diverged: {stopped}" if stopped else "finished"
    except OutOfTime:
        record["stopped_by"] = "budget"
    walls = [r["wall_seconds"] for r in record["per_epoch"]]
    later = walls[1:] or walls  # the epochs after the first are the steady state
    if walls:
        steady = sum(later) / len(later)
        record["estimated_full_run_minutes"] = (walls[0] + (epochs - 1) * steady) / 60
        record["final_test_accuracy"] = record["per_epoch"][-1]["test_accuracy"]
    record["note"] = (f"the learning-rate schedule is the {epochs}-epoch one: the accuracy "
                      f"after epoch k is that of epoch k of the full run"
                      + (f", not of a {len(walls)}-epoch run" if len(walls) < epochs else ""))


# --- the summary, and main -------------------------------------------------------------

def print_summary(report: dict) -> None:
    env = report["environment"]
    precision = "float32" if env["precision"] == "float32" else f"{env['precision']} autocast"
    print(f"\nGPU check on {env['device_name']} (torch {env['torch']}, torchvision "
          f"{env['torchvision']}, CUDA {env['cuda']}, {precision})")
    if report["overrides"]:
        print(f"  not the notebooks' settings: {report['overrides']}")
    if report["timing"]:
        print(f"{'model':<12} {'px':>4} {'batch/eval':>10} {'train img/s':>11} {'eval img/s':>10} "
              f"{'train ms':>9} {'eval ms':>8} {'peak GiB':>8}")
    for r in report["timing"]:
        if "error" in r:
            print(f"{r['model']:<12} failed: {r['error']}")
            continue
        peak = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "-"
        batches = f"{r['batch_size']}/{r['eval_batch_size']}"
        print(f"{r['model']:<12} {r['input_size']:>4} {batches:>10} "
              f"{r['train_img_per_s']:>11,.0f} {r['eval_img_per_s']:>10,.0f} "
              f"{r['train_step_ms']:>9.1f} {r['eval_step_ms']:>8.1f} {peak:>8}")
    t = report.get("training")
    if t and t.get("per_epoch"):
        print(f"\nQ2(a) {t['model']} recipe ({t['run']}), {t['train_images']:,} training images, "
              f"test set {t['test_images']:,}: {t['epochs_run']} of {t['schedule_epochs']} epochs "
              f"in a {t['minutes_budget']:g}-minute budget (stopped: {t['stopped_by']})")
        print(f"{'epoch':>5} {'seconds':>8} {'lr':>9} {'test acc':>9}")
        for r in t["per_epoch"]:
            print(f"{r['epoch']:>5} {r['wall_seconds']:>8.1f} {r['lr']:>9.2e} "
                  f"{r['test_accuracy']:>9.4f}")
        print(f"Full {t['schedule_epochs']}-epoch run: about "
              f"{t['estimated_full_run_minutes']:.1f} min. Note: {t['note']}.")
    print(f"\nWrote {report['out']} ({report['total_seconds']:.0f} s in all)")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = require_device(args.device)  # first: without CUDA nothing else is worth doing
    started = time.perf_counter()
    hardware_for(device).set_backend_flags()  # as fit sets them (cudnn.benchmark on CUDA)
    q2, q3 = notebook_parameters(Q2_NOTEBOOK), notebook_parameters(Q3_NOTEBOOK)
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "image_size": args.image_size,
                                   "epochs": args.epochs, "max_images": args.max_images or None,
                                   "device": "cpu" if device.type == "cpu" else None}.items()
                 if v is not None}
    for params in (q2, q3):
        params["batch_size"] = args.batch_size or params["batch_size"]
    q2["epochs"] = args.epochs or q2["epochs"]
    q3["image_size"] = args.image_size or q3["image_size"]
    check_q2_config(q2)
    out = Path(args.out)
    report = {"environment": environment(device), "overrides": overrides, "out": str(out),
              "settings": {"q2_batch_size": q2["batch_size"], "q3_batch_size": q3["batch_size"],
                           "q3_image_size": q3["image_size"], "warmup_steps": args.warmup_steps,
                           "timed_steps": args.steps, "minutes_budget": args.minutes},
              "timing": [], "training": None, "total_seconds": 0.0}

    def save() -> None:
        report["total_seconds"] = time.perf_counter() - started
        write_json(out, report)

    ds = load_dataset("cifar10", args.data_dir, download=not args.no_download)
    train_idx, test_idx = torch.arange(len(ds.train_labels)), torch.arange(len(ds.test_labels))
    if args.max_images:
        train_idx = stratified_indices(ds.train_labels, count=min(args.max_images, len(train_idx)))
        test_idx = stratified_indices(ds.test_labels, count=min(args.max_images, len(test_idx)))
    # Numbers on an image-folder copy (the JPEG copy) run slightly below the official files'.
    report["data"] = {"data_dir": str(args.data_dir), "source": ds.source,
                      "train_images": len(train_idx), "test_images": len(test_idx)}

    print(f"Timing {len(args.models)} models on {report['environment']['device_name']} ...",
          flush=True)
    for name in args.models:
        q = q3 if name.startswith("tv_") else q2
        try:
            r = time_model(name, ds, train_idx, device=device, batch_size=q["batch_size"],
                           image_size=q3["image_size"] if q is q3 else None,
                           warmup=args.warmup_steps, steps=args.steps)
        except Exception as err:  # one model's failure (say, out of memory) spares the rest
            r = {"model": name, "error": f"{type(err).__name__}: {err}"}
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        report["timing"].append(r)
        print(f"  {name}: " + (r.get("error") or f"train {r['train_img_per_s']:,.0f} img/s, "
                               f"eval {r['eval_img_per_s']:,.0f} img/s"), flush=True)
        save()

    if not args.no_train:
        print(f"Training Q2(a) {RECIPE_MODEL} for up to {args.minutes:g} minutes ...", flush=True)
        report["training"] = {}
        train_recipe(ds, train_idx, test_idx, q2, device=device, minutes=args.minutes,
                     runs_dir=Path(args.runs_dir), record=report["training"], save=save)
        report["lr_sweep"] = {}
        for lr in [lr for lr in args.lrs if lr != q2["lr_sgd"]]:
            print(f"Training Q2(a) {RECIPE_MODEL} at peak lr {lr:g} for up to {args.minutes:g} "
                  "minutes ...", flush=True)
            report["lr_sweep"][f"{lr:g}"] = {}
            train_recipe(ds, train_idx, test_idx, {**q2, "lr_sgd": lr}, device=device,
                         minutes=args.minutes, runs_dir=Path(args.runs_dir),
                         record=report["lr_sweep"][f"{lr:g}"], save=save)
    save()
    print_summary(report)
    failed = [r["model"] for r in report["timing"] if "error" in r]
    if failed:
        print(f"Timing failed for {', '.join(failed)}: see the errors above.", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
