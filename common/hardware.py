"""The hardware choices of a run, decided in one place from its device.

    hw = hardware_for(device)
    dtype = hw.autocast_dtype(amp=True)   # None (float32), torch.float16 or torch.bfloat16
    scaler = hw.grad_scaler(amp=True)     # enabled for float16 only
    opt = make_optimizer(..., fused=hw.fused)
    nhwc = hw.use_channels_last(wanted=True)
    size = hw.eval_batch_size(128, EVAL_BATCH_MULTIPLE["Q2"])
    hw.set_backend_flags()                # cudnn.benchmark on CUDA

    device        autocast            GradScaler  fused  channels_last  eval batches (Q2/Q3)
    cpu           none (float32)      off         no     no             1x / 1x
    cuda, T4      float16             on          yes    yes            4x / 2x
    cuda, Ampere+ bfloat16            off         yes    yes            4x / 2x

Every check runs on a CPU, but the student runs the CUDA branch. The environment
variable COMP5541_EMULATE makes any device take a GPU's choices, so that branch
runs (slowly) on the CPU: "t4" gives Colab's T4 (float16 autocast and an enabled
GradScaler, which torch has on the CPU too), "bf16" an L4 or A100 (bfloat16, no
scaler). Only cuDNN's flags stay off under emulation: the CPU never calls cuDNN.
The variable is read at every call, so a test can switch it per run.

Layout and precision are how a run computes, not what it computes: a run started
on one kind of device resumes on another (common.train.fit records them in
config.json as provenance). A resume on the same side is exact on the CPU (an
emulated GPU included): it ends bit for bit where an uninterrupted run would. On
CUDA, cuDNN's autotuning and atomic adds make it close but not bitwise, and a
resume on the other side goes on in that side's arithmetic.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import ConfigError

__all__ = ["EMULATE_VARIABLE", "EMULATIONS", "EVAL_BATCH_MULTIPLE", "Hardware", "hardware_for"]

EMULATE_VARIABLE = "COMP5541_EMULATE"
EMULATIONS = {"t4": torch.float16, "bf16": torch.bfloat16}  # value -> the GPU's autocast dtype
# Held-out batches are this many training batches on a GPU (no activations are kept
# for a backward pass): 4x for Q2's 32 px networks, 2x for Q3's 224 px ones, where
# 4x of VGG16 is ~7 GB.
EVAL_BATCH_MULTIPLE = {"Q2": 4, "Q3": 2}


@dataclass(frozen=True)
class Hardware:
    """What a run does on its device. `half` is the autocast dtype used when amp is
    asked for (None: float32 always); `gpu` means a GPU's choices, real or emulated;
    `emulating` the COMP5541_EMULATE value behind them, if any."""

    device: torch.device
    name: str
    half: torch.dtype | None
    fused: bool
    channels_last: bool
    gpu: bool
    cudnn_benchmark: bool
    emulating: str | None = None

    def autocast_dtype(self, amp: bool) -> torch.dtype | None:
        return self.half if amp else None

    def scaler_enabled(self, amp: bool) -> bool:
        # Loss scaling only for float16: bfloat16 has float32's exponent range.
        return self.autocast_dtype(amp) == torch.float16

    def grad_scaler(self, amp: bool) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.scaler_enabled(amp))

    def use_channels_last(self, wanted: bool) -> bool:
        """NHWC where asked for and the hardware gains from it (tensor cores); on the
        CPU it only costs conversions."""
        return bool(wanted) and self.channels_last

    def eval_batch_size(self, batch_size: int, multiple: int) -> int:
        """A GPU evaluates `multiple` training batches at once (fewer, fuller kernel
        launches); the CPU gains nothing and keeps the training batch size."""
        return batch_size * multiple if self.gpu else batch_size

    def set_backend_flags(self) -> None:
        """cuDNN picks the fastest kernels for the (fixed) input shapes: once per
        shape, so the first batches are slow and the choice varies between runs."""
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

    def provenance(self, amp: bool, channels_last: bool) -> dict:
        """How a run computes, for config.json: never a reason to refuse a resume."""
        precision = str(self.autocast_dtype(amp) or torch.float32).replace("torch.", "")
        return {"hardware": self.name, "precision": precision,
                "channels_last": self.use_channels_last(channels_last), "fused": self.fused}


def hardware_for(device) -> Hardware:
    """The choices for `device`, or those of the GPU named by COMP5541_EMULATE."""
    device = torch.device(device)
    emulate = os.environ.get(EMULATE_VARIABLE, "")
    if emulate:
        if emulate not in EMULATIONS:
            raise ConfigError(f"{EMULATE_VARIABLE}={emulate!r} is not a GPU this code emulates; "
                              f"valid values: {', '.join(EMULATIONS)} (or unset)")
        return Hardware(device, f"{emulate} (emulated on {device.type})", EMULATIONS[emulate],
                        fused=True, channels_last=True, gpu=True,
                        cudnn_benchmark=device.type == "cuda", emulating=emulate)
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return Hardware(device, torch.cuda.get_device_name(device),
                        torch.bfloat16 if native_bf16 else torch.float16, fused=True,
                        channels_last=True, gpu=True, cudnn_benchmark=True)
    # The CPU: float32 (CPU autocast is slow here and would change the numerics the
    # tests compare), the stock optimiser kernels, the default layout.
    return Hardware(device, device.type, None, fused=False, channels_last=False, gpu=False,
                    cudnn_benchmark=False)
