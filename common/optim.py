"""Optimisers and learning-rate schedules, chosen by name.

    opt = make_optimizer("sgd", model.parameters(), lr=0.05, nesterov=True, weight_decay=5e-4)
    scheduler, per_batch = make_scheduler("cosine", opt, epochs=40, steps_per_epoch=391)
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Iterable, Mapping

import torch

from .config import ConfigError

__all__ = ["OPTIMIZERS", "SCHEDULES", "SCHEDULE_OPTIONS", "KERNEL_OPTIONS", "SkipSafeSGD",
           "make_optimizer", "make_scheduler", "load_optimizer_state", "schedule_settings",
           "parameter_groups", "check_name"]

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
# Options each schedule accepts through fit(schedule_options=...), with defaults.
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "step": {"step_size": None, "gamma": 0.1},  # step_size None: epochs // 3 (at least 1)
    "cosine": {"eta_min": 0.0, "warmup_epochs": 0},
    "onecycle": {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
}


def parameter_groups(model: torch.nn.Module, lr: float,
                     lr_multipliers: Mapping[str, float] | None = None) -> list[dict]:
    """The model's trainable parameters as optimiser groups, each with its own lr.

    `lr_multipliers` maps a module name prefix (e.g. "fc" for ResNet's head) to a
    factor on `lr`; a parameter takes the factor of the longest prefix its name
    starts with, 1 otherwise. A new head trained at 10x the backbone's lr learns
    fast while the pretrained filters move little. Frozen parameters are left out."""
    multipliers = dict(lr_multipliers or {})
    names = {n for n, _ in model.named_parameters()}
    unknown = [k for k in multipliers if not any(n == k or n.startswith(k + ".") for n in names)]
    if unknown:
        raise ConfigError(f"lr_multipliers: no parameter of {type(model).__name__} is under "
                          f"{', '.join(map(repr, unknown))}; module names look like "
                          f"{', '.join(sorted({n.split('.')[0] for n in names}))}")
    groups: dict[float, list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        prefixes = [k for k in multipliers if name == k or name.startswith(k + ".")]
        factor = multipliers[max(prefixes, key=len)] if prefixes else 1.0
        groups.setdefault(factor, []).append(param)
    # The base group first, so param_groups[0]["lr"] is the backbone's (what the history logs).
    return [{"params": groups[f], "lr": lr * f} for f in sorted(groups)]


class RMSpropW(torch.optim.RMSprop):
    """RMSProp with decoupled weight decay (Loshchilov and Hutter 2019): each step
    shrinks the weights by the factor (1 - lr * weight_decay) outside the adaptive
    scaling, as AdamW does for Adam. Coupled L2 would be divided by the running RMS
    of the gradients, so weights with small gradients (AlexNet's wide fully
    connected layers) would be decayed far harder than the rest."""

    def __init__(self, params, *, lr: float, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=0.0)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = weight_decay

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            decay = group.get("decoupled_weight_decay", 0.0)
            if decay:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1 - group["lr"] * decay)
        return super().step(closure)


class SkipSafeSGD(torch.optim.SGD):
    """torch's SGD, whose fused kernel survives a skipped first step.

    Fused SGD creates its momentum buffers with torch.empty_like on its first step
    and fills them from the gradients. When a GradScaler skips that step (float16
    gradients overflow while it calibrates its scale, 2**16 at first), the kernel
    returns before writing them, and every later step reads uninitialised memory:
    NaN weights. So a missing buffer starts at zero before each fused step. That is
    the stock start exactly: with no dampening, buf = momentum * 0 + grad = grad,
    what a first step stores. Done at the step, not at creation, it also covers
    state loaded from a checkpoint taken before any step."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group.get("fused") and group["momentum"] and not group["dampening"]:
                for p in group["params"]:
                    if p.grad is not None and self.state[p].get("momentum_buffer") is None:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
        return super().step(closure)


def _fused(optimizer_class, fused: bool) -> dict:
    """{"fused": True} where asked for (common.hardware: on a GPU, real or emulated)
    and this torch's optimiser has a fused kernel. A fused step also takes the
    GradScaler's inf check on the device, so float16 training does not wait on the
    host after every step."""
    return {"fused": True} if fused and "fused" in inspect.signature(optimizer_class).parameters else {}


def make_optimizer(name: str, params: Iterable, *, lr: float, momentum: float = 0.9,
                   nesterov: bool = False, weight_decay: float = 0.0,
                   fused: bool = False) -> torch.optim.Optimizer:
    """An optimiser by name. `momentum` and `nesterov` apply to sgd only: RMSProp is
    used in its plain form (torch's default momentum 0) and Adam keeps its betas
    (0.9, 0.999).

    Weight decay shrinks each weight by the factor (1 - lr * weight_decay) per step
    for every optimiser: for sgd through the L2 term in the gradient (the same
    thing for SGD), for rmsprop and adam decoupled from the adaptive step
    (RMSpropW, torch's AdamW). "adamw" is another name for adam. `fused=True` (for
    parameters on a GPU) uses torch's fused kernels where it has them."""
    check_name("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        if nesterov and momentum <= 0:
            raise ConfigError("nesterov=True needs momentum > 0; set momentum=0.9 or nesterov=False")
        return SkipSafeSGD(params, lr=lr, momentum=momentum, nesterov=nesterov,
                           weight_decay=weight_decay, **_fused(SkipSafeSGD, fused))
    if name == "rmsprop":
        return RMSpropW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay,
                             **_fused(torch.optim.AdamW, fused))


# Options that choose how a step is computed (which kernel), not what it computes.
KERNEL_OPTIONS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """optimizer.load_state_dict(state), keeping the live optimiser's kernel options.

    torch restores every saved param-group option, kernels included, so a checkpoint
    from the CPU (fused=None) would turn off a GPU's fused kernels, and the GradScaler
    would then hand its scale to an unfused kernel, which refuses it. The live options
    are put into the saved groups before loading, since torch also places the state
    by them (a fused Adam's step counter lives on the device, an unfused one's on the CPU)."""
    saved = state["param_groups"]
    groups = [{**old, **{k: live[k] for k in KERNEL_OPTIONS if k in live}}
              for old, live in zip(saved, optimizer.param_groups)]
    # Extra saved groups stay, so torch still refuses a state of another group count.
    optimizer.load_state_dict({**state, "param_groups": groups + saved[len(groups):]})


def schedule_settings(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The schedule's options with defaults filled in; unknown options are an error."""
    check_name("schedule", name, SCHEDULES)
    options = dict(options or {})
    allowed = SCHEDULE_OPTIONS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"schedule {name!r} takes no option {', '.join(unknown)}; its options "
                          f"are: {', '.join(allowed) or 'none'}")
    return {**allowed, **options}


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, *, epochs: int,
                   steps_per_epoch: int, options: Mapping[str, Any] | None = None):
    """(scheduler or None, per_batch). `lr` is the optimiser's lr at creation:

    none      constant lr.
    step      lr * gamma ** (epoch // step_size), stepped per epoch.
    cosine    lr * (1 + cos(pi * t / T)) / 2 down to eta_min, t counting batches,
              T = epochs * steps_per_epoch; stepped per batch (smooth even for few epochs).
              With warmup_epochs w > 0, the lr first rises linearly from lr / W to lr over
              the first W = w * steps_per_epoch batches (Goyal et al. 2017), then decays
              to 0 over the rest: a high peak lr without the unstable first steps.
    onecycle  Smith's one-cycle policy peaking at lr after pct_start of the batches,
              stepped per batch; momentum (sgd) or beta1 (adam/adamw) cycles inversely.
    """
    opts = schedule_settings(name, options)
    total = epochs * steps_per_epoch
    if name == "none":
        return None, False
    if name == "step":
        step_size = opts["step_size"] or max(1, epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size,
                                               gamma=opts["gamma"]), False
    if name == "cosine" and opts["warmup_epochs"]:
        if opts["eta_min"]:
            raise ConfigError("cosine with warmup_epochs decays to 0; leave eta_min at 0")
        warm = max(1, round(opts["warmup_epochs"] * steps_per_epoch))
        if warm >= total:
            raise ConfigError(f"warmup_epochs={opts['warmup_epochs']} covers the whole run of "
                              f"{epochs} epochs; use fewer warm-up epochs")

        def factor(t: int) -> float:
            if t < warm:
                return (t + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total,
                                                          eta_min=opts["eta_min"]), True
    group = optimizer.param_groups[0]
    # Cycling momentum means something only where there is a momentum term to cycle;
    # for RMSProp it would switch on a momentum the plain algorithm does not have.
    cycles = "betas" in group or (isinstance(optimizer, torch.optim.SGD) and group["momentum"] > 0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
        pct_start=opts["pct_start"], div_factor=opts["div_factor"],
        final_div_factor=opts["final_div_factor"], cycle_momentum=cycles), True


def check_name(what: str, value: Any, choices: Iterable[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid names: {', '.join(choices)}")
