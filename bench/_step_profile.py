"""Where the time of one real ``Trainer.train_step`` goes: timers hooked into the step
(:class:`StepProbe`) and ``torch.profiler``'s busiest ops. Used by ``bench/train_speed.py``."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from bench import common


class StepProbe:
    """Timestamps inside the real ``Trainer.train_step``, from hooks (no library changes).

    Marks: data fetch (``batches.train``), each student's trunk (the trainer's ``_trunks``
    wrapped: the forward up to the hidden states), the loss (``linear_mutual_loss`` on hidden
    states, or ``mutual_loss`` on logits, wrapped where the trainer calls them), the arrival
    of the gradient at each trunk's output (tensor hooks: the loss backward, with the head's
    on the logits path, is done), gradient clipping (``torch.nn.utils.clip_grad_norm_``
    wrapped) and each optimiser step (step hooks). Every mark synchronises the device first.

    On the default path the fused loss (:mod:`minidml.fused_linear`) computes the head's
    logits and its gradients during its forward pass, so ``loss_forward`` holds the head's
    forward and backward and ``loss_backward`` is near zero; on the logits path the
    head's forward falls in ``other``. Their sum is the loss's cost either way. Steps of
    one micro-batch only (``grad_accum`` 1).
    """

    def __init__(self, trainer, device: torch.device):
        self.trainer, self.device = trainer, device
        self.marks: list[tuple[str, float]] = []

    def mark(self, label: str) -> None:
        common.sync(self.device)
        self.marks.append((label, time.perf_counter()))

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import minidml.trainer as trainer_mod

        tr, handles, restore = self.trainer, [], []
        if tr.config.grad_accum != 1:  # the phases pair one loss with one backward
            raise ValueError("StepProbe times steps of one micro-batch (grad_accum 1)")
        trunks = list(tr._trunks)

        def probed(i: int, trunk: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
            def run(*args: Any) -> torch.Tensor:
                self.mark(f"fwd_start:{i}")
                out = trunk(*args)
                self.mark(f"fwd_end:{i}")
                if out.requires_grad:
                    out.register_hook(lambda g: self.mark(f"grad_hidden:{i}"))
                return out
            return run

        def wrap(owner: Any, attr: str, label: str) -> None:
            original = getattr(owner, attr)
            in_instance = attr in vars(owner)

            def wrapper(*args, **kwargs):
                self.mark(f"{label}_start")
                out = original(*args, **kwargs)
                self.mark(f"{label}_end")
                return out

            setattr(owner, attr, wrapper)
            restore.append((owner, attr, original, in_instance))

        try:
            tr._trunks = [probed(i, t) for i, t in enumerate(trunks)]
            for opt in tr.optimizers:
                handles += [opt.register_step_pre_hook(lambda *_: self.mark("opt_start")),
                            opt.register_step_post_hook(lambda *_: self.mark("opt_end"))]
            for loss in ("linear_mutual_loss", "mutual_loss"):
                wrap(trainer_mod, loss, "loss")
            wrap(torch.nn.utils, "clip_grad_norm_", "clip")
            wrap(tr.batches, "train", "data")
            yield
        finally:
            tr._trunks = trunks
            for h in handles:
                h.remove()
            for owner, attr, original, in_instance in reversed(restore):
                if in_instance:
                    setattr(owner, attr, original)
                else:
                    delattr(owner, attr)  # drop the instance attribute: the method shows again

    def step(self) -> dict[str, float]:
        """Run one instrumented ``train_step``; its phases in seconds."""
        self.marks = []
        self.mark("step_start")
        self.trainer.train_step()
        self.mark("step_end")
        return phases(self.marks)


def phases(marks: list[tuple[str, float]]) -> dict[str, float]:
    t: dict[str, list[float]] = {}
    for label, when in marks:
        t.setdefault(label.split(":")[0], []).append(when)

    def spans(name: str) -> float:
        return sum(e - s for s, e in zip(t.get(f"{name}_start", []), t.get(f"{name}_end", []),
                                         strict=True))

    total = t["step_end"][0] - t["step_start"][0]
    out = {"data": spans("data"), "students_forward": spans("fwd")}
    if "loss_start" in t:
        out["loss_forward"] = spans("loss")
        loss_end = t["loss_end"][-1]
        backward_end = min(t.get("clip_start", []) + t.get("opt_start", []) or [loss_end])
        if "grad_hidden" in t:
            out["loss_backward"] = min(t["grad_hidden"]) - loss_end
            out["students_backward"] = backward_end - min(t["grad_hidden"])
        else:
            out["backward"] = backward_end - loss_end
    out["grad_clip"] = spans("clip")
    out["optimizer_step"] = spans("opt")
    out["other"] = total - sum(out.values())
    out["total"] = total
    return out


def profile_breakdown(cfgs: list[Any], s: Any, device: torch.device
                      ) -> dict[str, dict[str, Any]]:
    """Phases of ``s.profile_steps`` instrumented steps of each configuration (``name``,
    ``step`` and ``trainer`` of train_speed's ``Config``), alternating between them (as the
    timed rounds do): raw, median and per-phase minimum.

    The shares use the per-phase minima (interference from other processes only adds time),
    over their sum.
    """
    probes = {c.name: StepProbe(c.trainer, device) for c in cfgs}
    raw: dict[str, dict[str, list]] = {c.name: {"steps": [], "others_cpu_share": [],
                                                "minor_faults": []} for c in cfgs}
    for c in cfgs:
        c.step()  # untimed
    for _ in range(s.profile_steps):
        for c in cfgs:
            box: dict[str, dict[str, float]] = {}
            with probes[c.name].installed():
                tm = common.measure(lambda c=c, box=box: box.update(p=probes[c.name].step()),
                                    device)
            raw[c.name]["steps"].append(box["p"])
            raw[c.name]["others_cpu_share"].append(tm.others)
            raw[c.name]["minor_faults"].append(tm.minor_faults)
    out = {}
    for name, r in raw.items():
        steps = r["steps"]
        keys = [k for k in steps[0] if k != "total"]
        median = {k: statistics.median(st[k] for st in steps) for k in [*keys, "total"]}
        best = {k: min(st[k] for st in steps) for k in keys}
        best_total = sum(best.values())
        out[name] = {**r, "median_seconds": median, "min_seconds": best,
                     "sum_of_min_seconds": best_total,
                     "share_of_step": {k: best[k] / best_total for k in keys}}
    return out


def torch_profile(cfg: Any, device: torch.device, top: int = 15) -> dict[str, Any]:
    """One ``train_step`` under ``torch.profiler``: the ops that take the most self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    cfg.step()
    with profile(activities=activities) as prof:
        cfg.step()
        common.sync(device)
    attr = "self_cpu_time_total"
    if device.type == "cuda":
        attr = "self_device_time_total" if hasattr(prof.key_averages()[0],
                                                   "self_device_time_total") \
            else "self_cuda_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    total = sum(getattr(e, attr) for e in events) or 1.0
    return {"time_kind": attr, "total_seconds": total / 1e6, "top_ops": [
        {"op": e.key, "calls": e.count, "self_seconds": getattr(e, attr) / 1e6,
         "share": getattr(e, attr) / total} for e in events[:top]]}
