"""torchvision's ImageNet models for transfer learning on CIFAR-10 (Q3).

    model = build_transfer_model("tv_resnet18", pretrained=True, freeze="upto:layer3")
    mean, std = normalisation("tv_resnet18")              # the constants shipped with the weights
    batches = DeviceBatches(..., mean=mean, std=std, image_size=224)
    parameter_counts(model)                               # {'trainable': ..., 'total': ...}

The names carry a `tv_` prefix so they are never confused with the CIFAR-sized
networks of Q2 (`alexnet`, `resnet18`, ... in common.models): `tv_alexnet` is
torchvision's ImageNet AlexNet with its 1000-way head replaced by a 10-way one.
`pretrained=False` builds the same architecture with torchvision's random
initialisation, so "from scratch" differs from "pretrained" in the weights only.

Weights come through torchvision's weights API and torch.hub's cache,
`$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch/hub/checkpoints/`).
Online, torchvision downloads them once. Offline, copy the official files
(`alexnet-owt-7be5be79.pth`, `resnet18-f37072fd.pth`, `vgg16-397923af.pth`, ...)
into that folder; a missing file raises WeightsNotFoundError naming the file,
the folder and the URL.

Input size. The weights were learned on 224x224 crops, so CIFAR's 32x32 images
are resized on the device (DeviceBatches(image_size=...)). At 224 the objects
appear at roughly the scale the filters were trained on, but every image costs
(224/32)^2 = 49 times the pixels of the native size, and compute grows with
them. Smaller sizes are proportionally cheaper and transfer less well.
AlexNet's convolution and pooling stack needs at least 63 pixels
(min_image_size); the others accept CIFAR's native 32.

Partial fine-tuning: layer_groups names each model's groups (resnet18: stem,
layer1..layer4, head; vgg16: block1..block5, fc6, fc7, head; alexnet:
conv1..conv5, fc6, fc7, head) and `freeze` is 'none', 'head' (a linear probe)
or 'upto:<group>'. Frozen BatchNorm layers stay in eval mode (EvalBatchNorm2d).

The second half of the module serves the Q3 notebook: resolve_weights (smoke
runs never download), train_transfer (build + common.train.fit + a record of the
run), choose_lr (on the validation split), the Q3 figures, and the observation
texts generated from the records.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

__all__ = ["TRANSFER_MODELS", "WeightsNotFoundError", "WeightsUnreadableError",
           "EvalBatchNorm2d", "build_transfer_model", "transfer_model_names",
           "imagenet_weights", "normalisation", "min_image_size", "check_image_size",
           "display_name", "checkpoints_dir", "weights_file", "weights_source", "file_hash_matches",
           "fabricate_weights", "layer_groups", "freeze_strategies", "apply_freeze",
           "parameter_counts", "param_groups", "resolve_weights",
           "subset_digest", "train_transfer", "choose_lr", "plot_accuracy_vs_fraction",
           "plot_run_costs", "plot_accuracy_vs_time", "run_name", "describe_freeze",
           "final_accuracy", "mean_epoch_seconds", "caveats", "observe_fractions",
           "observe_models", "observe_freezing"]

CIFAR_SIZE = 32  # we never shrink CIFAR below its native size: that only discards pixels


@dataclass(frozen=True)
class TransferSpec:
    arch: str      # torchvision's model name
    weights: str   # the member of torchvision's weights enum, pinned for reproducibility
    label: str     # for figures and tables
    head: str      # qualified name of the final Linear layer that is replaced


TRANSFER_MODELS: dict[str, TransferSpec] = {
    "tv_alexnet": TransferSpec("alexnet", "IMAGENET1K_V1", "AlexNet", "classifier.6"),
    "tv_vgg11_bn": TransferSpec("vgg11_bn", "IMAGENET1K_V1", "VGG11-BN", "classifier.6"),
    "tv_vgg16": TransferSpec("vgg16", "IMAGENET1K_V1", "VGG16", "classifier.6"),
    "tv_resnet18": TransferSpec("resnet18", "IMAGENET1K_V1", "ResNet18", "fc"),
    "tv_resnet50": TransferSpec("resnet50", "IMAGENET1K_V2", "ResNet50", "fc"),
}


class WeightsNotFoundError(FileNotFoundError):
    """The ImageNet weights are not in the cache folder and could not be downloaded."""


class WeightsUnreadableError(RuntimeError):
    """A weights file is present but cannot be loaded (truncated or not a state dict)."""


def transfer_model_names() -> list[str]:
    return list(TRANSFER_MODELS)


def _spec(name: str) -> TransferSpec:
    if name not in TRANSFER_MODELS:
        raise ValueError(f"unknown transfer model {name!r}; known: {', '.join(TRANSFER_MODELS)}")
    return TRANSFER_MODELS[name]


def imagenet_weights(name: str):
    """torchvision's weights enum member for `name`, e.g. AlexNet_Weights.IMAGENET1K_V1.
    Looking it up downloads nothing."""
    from torchvision.models import get_model_weights

    spec = _spec(name)
    return get_model_weights(spec.arch)[spec.weights]


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel that the weights were trained with (their
    `transforms()` preset). Scratch models use the same, so both see identical inputs."""
    preset = imagenet_weights(name).transforms()
    return tuple(float(m) for m in preset.mean), tuple(float(s) for s in preset.std)


def min_image_size(name: str) -> int:
    """Smallest input side the model takes: the weights' own `min_size` (63 for
    AlexNet, 32 for VGG, 1 for ResNet), but never below CIFAR's native 32."""
    return max(CIFAR_SIZE, int(imagenet_weights(name).meta["min_size"][0]))


def check_image_size(name: str, image_size: int) -> None:
    smallest = min_image_size(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < smallest:
        raise ValueError(f"image_size={image_size!r} is too small for {name}: it needs at least "
                         f"{smallest} pixels (224 matches the ImageNet training crops)")


def display_name(name: str, pretrained: bool) -> str:
    """'AlexNet (torchvision, ImageNet-pretrained)' or 'AlexNet (torchvision, from scratch)'."""
    how = "ImageNet-pretrained" if pretrained else "from scratch"
    return f"{_spec(name).label} (torchvision, {how})"


# --- weights files ---------------------------------------------------------------

def checkpoints_dir() -> Path:
    """torch.hub's weights folder: `$TORCH_HOME/hub/checkpoints`, read at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Where the official weights file of `name` is looked for."""
    url = imagenet_weights(name).url
    return Path(folder or checkpoints_dir()) / url.rsplit("/", 1)[-1]


_SHA_CACHE: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def weights_source(name: str, folder: str | os.PathLike | None = None) -> str:
    """'official', 'unofficial' or 'missing'.

    The official file names carry the first hex digits of the file's sha256
    (`resnet18-f37072fd.pth`). torchvision checks them only while downloading;
    a file put into the folder by hand is loaded unchecked. Checking here tells
    real ImageNet weights from anything else under the same name, such as the
    random ones fabricate_weights writes for tests and smoke runs.
    """
    path = weights_file(name, folder)
    if not path.is_file():
        return "missing"
    return "official" if file_hash_matches(path) else "unofficial"


def file_hash_matches(path: str | os.PathLike) -> bool:
    """Does the file's sha256 start with the hex digits in its name (`name-<hex>.pth`)?"""
    path = Path(path)
    match = torch.hub.HASH_REGEX.search(path.name)
    return bool(match and match.group(1)) and _sha256(path).startswith(match.group(1))


def fabricate_weights(folder: str | os.PathLike, names: Iterable[str], *, seed: int = 0,
                      overwrite: bool = False) -> list[Path]:
    """Write random weights of the right shapes under the official file names.

    Each file is the state dict of a freshly initialised 1000-class torchvision
    model, so the real loading path runs and a network built from it behaves
    like any random initialisation. For tests and offline smoke runs only: the
    values are not ImageNet weights and no accuracy conclusion can follow from
    them (weights_source() reports them as 'unofficial'). Existing files are
    kept unless `overwrite`.
    """
    from torchvision.models import get_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = weights_file(name, folder)
        if overwrite or not path.is_file():
            torch.manual_seed(seed)
            state = get_model(_spec(name).arch, weights=None).state_dict()
            tmp = path.with_name(path.name + ".tmp")
            torch.save(state, tmp)
            tmp.replace(path)
        written.append(path)
    return written


def _load_imagenet_state(name: str, folder: str | os.PathLike | None) -> dict:
    """The state dict through torchvision's own path (download into the cache
    when absent), with the network and file errors turned into clear ones."""
    weights = imagenet_weights(name)
    path = weights_file(name, folder)
    try:
        # weights_only: a file copied in by hand is never unpickled as code.
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True,
                                      model_dir=str(path.parent))
    except Exception as err:
        # A present file that fails to unpickle can raise almost anything; a
        # failed download raises URLError (an OSError) or RuntimeError (bad hash).
        if not (path.is_file() or isinstance(err, (OSError, RuntimeError))):
            raise
        reason = f"{type(err).__name__}: {err}"
    # Raised outside the handler, so no urllib traceback is chained above it.
    if path.is_file():
        raise WeightsUnreadableError(
            f"cannot load the weights file {path} ({reason}). It may be truncated or not "
            f"the official file; delete it and run again online, or replace it with a copy "
            f"of {weights.url}.")
    raise WeightsNotFoundError(
        f"ImageNet weights for {name} not found: expected the file {path.name} in the folder "
        f"{path.parent}, and downloading it failed ({reason}).\n"
        f"Fixes: run online once (torchvision downloads {weights.url} into that folder); or "
        f"download that URL elsewhere and copy the file into {path.parent} (set TORCH_HOME to "
        f"use another folder: files go in $TORCH_HOME/hub/checkpoints); or pass "
        f"pretrained=False to train from scratch.")


# --- building ---------------------------------------------------------------------

def build_transfer_model(name: str, num_classes: int = 10, in_channels: int = 3, *,
                         pretrained: bool = False, freeze: str = "none",
                         weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """A torchvision ImageNet model with a fresh `num_classes`-way head.

    pretrained: load the ImageNet weights (from `weights_dir`, default torch.hub's
        cache folder, downloading when absent); False keeps torchvision's random
        initialisation of the same architecture (the from-scratch baseline). It
        defaults to False, as torchvision's `weights=None` does, so nothing is
        downloaded unless asked for.
    freeze: 'none', 'head' or 'upto:<group>' (apply_freeze).
    The new head is initialised by the global torch RNG: seed first for repeatable runs.
    """
    from torchvision.models import get_model

    spec = _spec(name)
    if in_channels != 3:
        raise ValueError(f"{name} takes RGB input (in_channels=3), got in_channels={in_channels}; "
                         "the ImageNet weights have three input channels")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: expected a positive integer")
    if pretrained:
        state = _load_imagenet_state(name, weights_dir)
        # Built on the meta device: no memory and no time spent on a random
        # initialisation the weights overwrite at once (seconds for VGG16's 138M).
        with torch.device("meta"):
            model = get_model(spec.arch, weights=None)  # 1000 classes, as the weights expect
        model.load_state_dict(state, assign=True)
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"{name}: the weights file holds no values for {', '.join(left)}")
    else:
        model = get_model(spec.arch, weights=None)
    parent_name, _, attr = spec.head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    model.transfer_name = name  # which registry entry built it; not in the state dict
    apply_freeze(model, freeze)
    return model


# --- layer groups and freezing -------------------------------------------------------

def _split_sequential(seq: nn.Sequential, prefix: str, group: str, *, starts_at=None,
                      ends_at=None) -> dict[str, list[str]]:
    """Cut a Sequential into numbered groups: a new group begins at each
    `starts_at` layer (AlexNet: per convolution) or ends after each `ends_at`
    layer (VGG: per max-pool block)."""
    groups: list[list[str]] = [[]]
    for idx, layer in seq.named_children():
        if starts_at and isinstance(layer, starts_at) and groups[-1]:
            groups.append([])
        groups[-1].append(f"{prefix}.{idx}")
        if ends_at and isinstance(layer, ends_at):
            groups.append([])
    return {f"{group}{i}": g for i, g in enumerate((g for g in groups if g), start=1)}


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Named groups of submodules, input to output, as qualified module names.

    resnet:  stem (conv1, bn1), layer1 .. layer4, head (fc)
    vgg:     block1 .. block5 (one per max-pool), fc6, fc7, head (classifier.6)
    alexnet: conv1 .. conv5 (each with its ReLU and pooling), fc6, fc7, head
    Every parameter belongs to exactly one group.
    """
    from torchvision.models import AlexNet, ResNet, VGG

    if isinstance(model, ResNet):
        return {"stem": ["conv1", "bn1", "relu", "maxpool"],
                **{f"layer{i}": [f"layer{i}"] for i in range(1, 5)},
                "head": ["fc"]}
    if isinstance(model, (VGG, AlexNet)):
        if isinstance(model, VGG):
            features = _split_sequential(model.features, "features", "block", ends_at=nn.MaxPool2d)
        else:
            features = _split_sequential(model.features, "features", "conv", starts_at=nn.Conv2d)
        return {**features,
                "fc6": [f"classifier.{i}" for i in range(0, 3)],
                "fc7": [f"classifier.{i}" for i in range(3, 6)],
                "head": ["classifier.6"]}
    raise TypeError(f"no layer groups for {type(model).__name__}: expected a model from "
                    f"build_transfer_model ({', '.join(TRANSFER_MODELS)})")


def freeze_strategies(model: nn.Module | str) -> list[str]:
    """The valid `freeze` values for a model (or a registry name), from least to
    most frozen."""
    if isinstance(model, str):
        from torchvision.models import get_model
        with torch.device("meta"):  # the structure only: no memory, no initialisation
            model = get_model(_spec(model).arch, weights=None)
    groups = [g for g in layer_groups(model) if g != "head"]
    return ["none", *(f"upto:{g}" for g in groups), "head"]


def _frozen_groups(model: nn.Module, strategy: str) -> list[str]:
    groups = list(layer_groups(model))
    valid = freeze_strategies(model)
    if strategy == "none":
        return []
    if strategy == "head":
        return groups[:-1]
    if isinstance(strategy, str) and strategy.startswith("upto:") and strategy in valid:
        return groups[:groups.index(strategy[len("upto:"):]) + 1]
    raise ValueError(f"freeze={strategy!r}: expected one of {', '.join(valid)} "
                     "('head' trains the head only; 'upto:<group>' freezes that group and "
                     "everything before it)")


class EvalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that stays in eval mode: it normalises with its stored
    running statistics and never updates them, whatever `model.train()` says.

    Why: freezing a BatchNorm's weight and bias is not enough. In training mode
    it would normalise with each CIFAR batch's statistics and overwrite the
    ImageNet running statistics, so the "frozen" layers would compute a
    different function during training than at test time, and a different one
    from the pretrained network. In eval mode a frozen block is exactly the
    pretrained feature extractor. Same parameters, buffers and state-dict keys
    as BatchNorm2d, so checkpoints load into either.
    """

    def train(self, mode: bool = True):
        return super().train(False)


def _swap_batchnorm(model: nn.Module, root: str, frozen: bool) -> None:
    """Turn every BatchNorm2d under `root` into EvalBatchNorm2d (frozen) or back,
    keeping the very same parameter and buffer tensors."""
    target = EvalBatchNorm2d if frozen else nn.BatchNorm2d
    for qual, module in list(model.get_submodule(root).named_modules(prefix=root)):
        if not isinstance(module, nn.BatchNorm2d) or type(module) is target:
            continue
        new = target(module.num_features, eps=module.eps, momentum=module.momentum,
                      affine=module.affine, track_running_stats=module.track_running_stats)
        new._parameters = module._parameters  # share, not copy: optimisers keep working
        new._buffers = module._buffers
        new.train(module.training)
        parent_name, _, attr = qual.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def apply_freeze(model: nn.Module, strategy: str = "none") -> nn.Module:
    """Freeze groups of `model` in place and return it.

    'none' trains everything; 'head' trains only the new head (a linear probe on
    the pretrained features); 'upto:<group>' freezes that group and all groups
    before it (freeze_strategies lists them). Frozen parameters get
    requires_grad=False, so autograd computes no gradient for them and stops
    the backward pass at the first trainable group, which is where partial
    fine-tuning saves time. Frozen BatchNorm layers stay in eval mode
    (EvalBatchNorm2d). Calling it again with another strategy re-freezes from scratch.
    """
    frozen = set(_frozen_groups(model, strategy))
    for group, modules in layer_groups(model).items():
        for qual in modules:
            for p in model.get_submodule(qual).parameters():
                p.requires_grad_(group not in frozen)
            _swap_batchnorm(model, qual, group in frozen)
    model.freeze_strategy = strategy
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """{'trainable': parameters with requires_grad, 'total': all parameters}."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def param_groups(model: nn.Module, lr: float, decay: float = 1.0) -> list[dict]:
    """Optimiser parameter groups with discriminative learning rates.

    The head gets `lr`; each group further from it gets `decay` times the lr of
    the next one (layer-wise decay, as in ULMFiT: early, generic filters move
    less than late, task-specific ones). Frozen parameters are left out, so an
    optimiser built from these groups only ever sees trainable ones.
    Each dict: {'params': [...], 'lr': float, 'name': group}.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"decay={decay!r}: expected a number in (0, 1]; 1 gives one lr for all")
    groups = list(layer_groups(model).items())
    out = []
    for depth, (group, modules) in enumerate(reversed(groups)):
        params = [p for q in modules for p in model.get_submodule(q).parameters() if p.requires_grad]
        if params:
            out.append({"params": params, "lr": lr * decay ** depth, "name": group})
    return out[::-1]


# --- Q3 runs ---------------------------------------------------------------------------

def resolve_weights(names: Iterable[str], *, smoke: bool, smoke_dir: str | os.PathLike,
                    log=print) -> dict[str, str | None]:
    """Decide, before any training, which folder each model's weights load from
    (None: torch.hub's folder, downloading when the file is missing).

    Full runs use torch.hub's folder. Smoke runs never download (hundreds of MB
    for a plumbing check): they use official files already in torch.hub's folder,
    and otherwise fabricate random stand-ins in `smoke_dir`. Never in torch.hub's
    folder: a later full run would load them from there as if they were ImageNet's.
    """
    chosen: dict[str, str | None] = {}
    for name in dict.fromkeys(names):
        source = weights_source(name)
        if not smoke or source == "official":
            chosen[name] = None
            if source == "unofficial":
                log(f"WARNING: {weights_file(name)} is not the official {name} weights file "
                    "(its sha256 does not match its name); results are not ImageNet transfer.")
            continue
        [path] = fabricate_weights(smoke_dir, [name])
        log(f"SMOKE RUN: {name} uses FABRICATED random weights ({path}), not ImageNet weights; "
            "no conclusion about transfer learning can be drawn from this run.")
        chosen[name] = str(smoke_dir)
    return chosen


def subset_digest(indices) -> str:
    """A short fingerprint of a set of sample indices: equal digests, same images."""
    arr = torch.as_tensor(indices, dtype=torch.int64).sort().values.numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()[:12]


def train_transfer(name: str, *, pretrained: bool, freeze: str, train_batches, eval_batches,
                   run_dir: str | os.PathLike, epochs: int, lr: float, device, seed: int,
                   weights_dir: str | os.PathLike | None = None, subset=None,
                   config: dict | None = None, **fit_options) -> dict:
    """Build `name`, train it with common.train.fit (resuming or reusing the run in
    `run_dir`), and return a record of the run for tables, figures and summary.json.

    train_batches / eval_batches: DeviceBatches normalised with normalisation(name)
    and resized to at least min_image_size(name). `subset` (the training indices)
    is fingerprinted in the record, so runs can be checked to have seen the same
    images. Everything that defines the run goes into fit's `config`: a run
    directory never mixes two settings.
    """
    from .config import seed_everything
    from .train import fit

    check_image_size(name, train_batches.image_size or train_batches.images.shape[-1])
    seed_everything(seed)  # the new head's initialisation (and the whole model from scratch)
    model = build_transfer_model(name, pretrained=pretrained, freeze=freeze,
                                 weights_dir=weights_dir)
    counts = parameter_counts(model)
    record = {"model": name, "label": display_name(name, pretrained), "pretrained": pretrained,
              "freeze": freeze, "lr": lr, "epochs": epochs,
              "image_size": train_batches.image_size, "train_images": train_batches.num_samples,
              "subset_digest": subset_digest(subset) if subset is not None else None,
              "trainable_params": counts["trainable"], "total_params": counts["total"],
              "weights_source": weights_source(name, weights_dir) if pretrained else "none (random init)",
              # Part of the run's settings: a run trained from other weights (say the
              # fabricated smoke stand-ins) is never reused as if from the official ones.
              "weights_sha256": _sha256(weights_file(name, weights_dir)) if pretrained else None,
              "run_dir": str(run_dir)}
    run_config = {**(config or {}), **{k: record[k] for k in
                  ("model", "pretrained", "freeze", "image_size", "train_images", "subset_digest",
                   "trainable_params", "weights_sha256")}, "seed": seed}
    print(f"--- {Path(run_dir).name}: {record['label']}, freeze={freeze}, lr={lr:g}, "
          f"{counts['trainable']:,}/{counts['total']:,} parameters trainable")
    record["history"] = fit(model, train_batches, eval_batches, run_dir=run_dir, epochs=epochs,
                            lr=lr, device=device, config=run_config, **fit_options)
    return record


def choose_lr(records: Sequence[dict]) -> tuple[float, list[dict]]:
    """The learning rate whose run ends with the best held-out accuracy (fit's
    'test_accuracy', here measured on the validation split), and one row per
    candidate. Diverged runs are skipped; equal accuracies go to the smaller lr."""
    rows = [{"lr": r["lr"], "val_accuracy": (r["history"]["test_accuracy"] or [None])[-1],
             "stopped": r["history"].get("stopped")} for r in records]
    usable = [row for row in rows if row["val_accuracy"] is not None and not row["stopped"]]
    if not usable:
        raise RuntimeError("every learning-rate candidate diverged; add smaller values "
                           f"to the candidates (tried {[r['lr'] for r in rows]})")
    best = max(usable, key=lambda row: (row["val_accuracy"], -row["lr"]))
    return best["lr"], rows


# --- Q3 figures (in the manner of common.plots: drawn from histories, closed, saved) ----

def _done(fig, save_to):
    """As common.plots does: out of pyplot (shown once, where displayed), saved as PNG."""
    import matplotlib.pyplot as plt
    from .plots import save_figure

    plt.close(fig)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


def plot_accuracy_vs_fraction(fractions: Sequence[float], accuracies: dict[str, Sequence[float]], *,
                              title: str | None = None, save_to=None):
    """Final test accuracy (%) against the fraction of training data, one line per
    label (e.g. pretrained and scratch), each point labelled with its value."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    x = [100 * f for f in fractions]
    for (label, acc), marker in zip(accuracies.items(), "os^v"):
        y = [100 * a for a in acc]
        ax.plot(x, y, marker + "-", label=label)
        for xi, yi in zip(x, y):
            ax.annotate(f"{yi:.1f}", (xi, yi), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
    ax.margins(y=0.15)  # room for the value labels
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}%" for v in x])
    ax.minorticks_off()
    ax.set(xlabel="training data used (share of the training split, log scale)",
           ylabel="test accuracy (%)", title=title or "test accuracy against amount of data")
    ax.grid(alpha=0.3)
    ax.legend()
    return _done(fig, save_to)


def plot_run_costs(records: Sequence[dict], *, title: str | None = None, save_to=None):
    """Three bar panels per run: trainable parameters (millions), mean seconds per
    epoch (training plus the test pass, as fit measures it) and final test accuracy."""
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r["short_label"] if "short_label" in r else r["label"] for r in records]
    panels = [("trainable parameters (M)", [r["trainable_params"] / 1e6 for r in records], "{:.2f}"),
              ("seconds per epoch", [float(np.mean(r["history"]["seconds"])) if r["history"]["seconds"]
                                     else float("nan") for r in records], "{:.1f}"),
              ("final test accuracy (%)", [100 * r["history"]["test_accuracy"][-1]
                                           if r["history"]["test_accuracy"] else float("nan")
                                           for r in records], "{:.1f}")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for ax, (what, values, fmt) in zip(axes, panels):
        bars = ax.bar(range(len(values)), values, color=[f"C{i}" for i in range(len(values))])
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
        ax.set(title=what)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=11)
    return _done(fig, save_to)


def plot_accuracy_vs_time(histories: dict[str, dict], *, title: str | None = None, save_to=None):
    """Test accuracy (%) against cumulative wall time: learning speed in seconds,
    not epochs, so a cheaper epoch counts for what it costs."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for label, history in histories.items():
        t = np.cumsum(history["seconds"])
        ax.plot(t, [100 * a for a in history["test_accuracy"]], "o-", ms=3, label=label)
    ax.set(xlabel="cumulative wall time (s)", ylabel="test accuracy (%)",
           title=title or "test accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _done(fig, save_to)


# --- Q3 tables and observations, generated from the run records -------------------------

def run_name(model: str, *, pretrained: bool, freeze: str, fraction: float, image_size: int,
             epochs: int, lr: float, prefix: str = "") -> str:
    """A run folder name made of every setting that defines the run, so equal
    settings share one run (trained once) and different ones never collide."""
    init = "pretrained" if pretrained else "scratch"
    return (f"{prefix}{model}_{init}_{freeze.replace(':', '-')}_f{fraction:g}_s{image_size}"
            f"_e{epochs}_lr{lr:g}")


def describe_freeze(model: str, strategy: str) -> str:
    """'all layers', 'head only (linear probe)' or 'layer4 + head (stem..layer3 frozen)'."""
    if strategy == "none":
        return "all layers"
    if strategy == "head":
        return "head only (linear probe)"
    groups = [g for g in freeze_strategies(model) if g.startswith("upto:")]
    names = [g[len("upto:"):] for g in groups] + ["head"]
    cut = names.index(strategy[len("upto:"):]) + 1
    frozen = names[0] if cut == 1 else f"{names[0]}..{names[cut - 1]}"
    return f"{' + '.join(names[cut:])} ({frozen} frozen)"


def final_accuracy(record: dict) -> float:
    acc = record["history"]["test_accuracy"]
    return acc[-1] if acc else float("nan")


def mean_epoch_seconds(record: dict) -> float:
    seconds = record["history"]["seconds"]
    return sum(seconds) / len(seconds) if seconds else float("nan")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def caveats(records: Sequence[dict], *, smoke: bool) -> str:
    """What the reader must know before reading any number: a smoke run, or
    weights that are not the official ImageNet files."""
    notes = []
    if smoke:
        notes.append("**Smoke run**: a few hundred images, one epoch, small inputs. The numbers "
                     "only show that every step runs; they are not results and support no conclusion.")
    bad = sorted({r["model"] for r in records if r["pretrained"] and r["weights_source"] != "official"})
    if bad:
        notes.append(f"**Not ImageNet weights**: the weights files of {', '.join(bad)} do not match "
                     "the official files' sha256 (e.g. random stand-ins fabricated for an offline "
                     "smoke run). 'Pretrained' runs of these models started from those values, so no "
                     "conclusion about transfer learning follows from them.")
    return "\n\n".join(notes)


def observe_fractions(rows: Sequence[dict], epochs: int) -> str:
    """Q3(a) observations. rows: {'fraction', 'images', 'pretrained', 'scratch'}
    (final test accuracies in [0, 1]), in increasing fraction."""
    lines, gains = [], []
    for r in rows:
        p, s = 100 * r["pretrained"], 100 * r["scratch"]
        gain = p - s
        gains.append(gain)
        lines.append(f"- With {100 * r['fraction']:g}% of the training split ({r['images']:,} images), "
                     f"fine-tuning reaches {p:.1f}% test accuracy against {s:.1f}% from scratch "
                     f"({gain:+.1f} points; test error {100 - s:.1f}% -> {100 - p:.1f}%).")
    first, last = rows[0], rows[-1]
    if len(rows) > 1:
        steps = [b - a for a, b in zip(gains, gains[1:])]
        trend = ("shrinks" if all(d < 0 for d in steps) else
                 "grows" if all(d > 0 for d in steps) else "does not change monotonically")
        listed = ", ".join(f"{g:+.1f} at {100 * r['fraction']:g}%" for g, r in zip(gains, rows))
        lines.append(f"- The benefit of transfer {trend} as the amount of data grows "
                     f"({listed}, in points of test accuracy)."
                     + (" Pretrained features matter most when labelled data are scarce; with more "
                        "data the scratch model learns more of what ImageNet supplied."
                        if trend == "shrinks" else ""))
        p0, sn = 100 * first["pretrained"], 100 * last["scratch"]
        verdict = "beats" if p0 > sn else "does not beat"
        lines.append(f"- Fine-tuned on {100 * first['fraction']:g}% of the data, the pretrained model "
                     f"{verdict} the scratch model trained on {100 * last['fraction']:g}% "
                     f"({p0:.1f}% against {sn:.1f}%).")
    worse = [r for r, g in zip(rows, gains) if g <= 0]
    if worse:
        where = ", ".join(f"{100 * r['fraction']:g}%" for r in worse)
        lines.append(f"- Transfer did not help at {where}.")
    lines.append(f"- Both settings had the same budget ({_epochs(epochs)}, same images, same "
                 "schedule); the learning rate of each was chosen on the validation split.")
    return "\n".join(lines)


def observe_models(records: Sequence[dict]) -> str:
    """Q3(b) observations: accuracy, speed and size of each fine-tuned model."""
    lines = []
    for r in records:
        acc = r["history"]["test_accuracy"]
        best = max(range(len(acc)), key=acc.__getitem__) if acc else 0
        gap = 100 * (r["history"]["train_accuracy"][-1] - acc[-1]) if acc else float("nan")
        lines.append(f"- {r['label']}: {100 * final_accuracy(r):.1f}% test accuracy after "
                     f"{_epochs(len(acc))} (best {100 * acc[best]:.1f}% at epoch {best + 1}; "
                     f"{100 * acc[0]:.1f}% after the first), {mean_epoch_seconds(r):.1f} s per epoch, "
                     f"{r['total_params'] / 1e6:.1f}M parameters; train minus test accuracy at the "
                     f"end: {gap:+.1f} points.")
    if len(records) > 1:
        ranked = sorted(records, key=final_accuracy, reverse=True)
        top, low = ranked[0], ranked[-1]
        ratio = mean_epoch_seconds(top) / mean_epoch_seconds(low)
        lines.append(f"- {top['label']} ends {100 * (final_accuracy(top) - final_accuracy(low)):.1f} "
                     f"points above {low['label']}, at {ratio:.2f} times its time per epoch and "
                     f"{top['total_params'] / low['total_params']:.2f} times its parameters.")
        fastest = min(records, key=mean_epoch_seconds)
        lines.append(f"- The cheapest per epoch is {fastest['label']}. Seconds per epoch include the "
                     "test pass; compute grows with the image size squared.")
    return "\n".join(lines)


def observe_freezing(records: Sequence[dict]) -> str:
    """Q3(c) observations: what each freezing strategy trains, costs and reaches."""
    lines = []
    for r in records:
        acc = r["history"]["test_accuracy"]
        lines.append(f"- {describe_freeze(r['model'], r['freeze'])}: {r['trainable_params']:,} of "
                     f"{r['total_params']:,} parameters trainable "
                     f"({100 * r['trainable_params'] / r['total_params']:.3g}%), "
                     f"{mean_epoch_seconds(r):.1f} s per epoch, {100 * acc[0]:.1f}% test accuracy "
                     f"after epoch 1, {100 * final_accuracy(r):.1f}% after {_epochs(len(acc))}.")
    if len(records) > 1:
        quick = min(records, key=mean_epoch_seconds)
        slow = max(records, key=mean_epoch_seconds)
        lines.append(f"- Time per epoch: {describe_freeze(quick['model'], quick['freeze'])} is "
                     f"{mean_epoch_seconds(slow) / mean_epoch_seconds(quick):.2f} times faster than "
                     f"{describe_freeze(slow['model'], slow['freeze'])}: frozen layers need no "
                     "backward pass and no optimiser update (the forward pass remains).")
        early = max(records, key=lambda r: r["history"]["test_accuracy"][0])
        best = max(records, key=final_accuracy)
        lines.append(f"- Learning speed: after one epoch {describe_freeze(early['model'], early['freeze'])} "
                     f"is ahead ({100 * early['history']['test_accuracy'][0]:.1f}%); at the end "
                     f"{describe_freeze(best['model'], best['freeze'])} is best "
                     f"({100 * final_accuracy(best):.1f}%).")
    return "\n".join(lines)
