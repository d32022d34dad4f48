"""Peak memory of training, each path in a fresh process (its peak RSS, ``VmHWM``).

Four students of the default shape (4 layers × 256, 4 heads), context 256, batch 32, random
tokens, 3 steps, at vocabularies 2,000 and 16,384:

* ``logits`` (the baseline): the step with materialised logits (``common.logits_step``:
  K×N×V logits, their softmaxes and gradients, and in the ω step those of the held-out batch);
* ``hidden``: ``Trainer.train_step`` with the defaults, mode ``wml`` and ``outer_every = 2``
  (the second step is an ω step, whose memory counts too), eager;
* ``hidden_compiled``: the same with ``compile = "on"`` (what inductor's rematerialisation
  of the trunks' activations saves, compiling included).

Targets (full CPU run): at 16,384 pieces the hidden path's peak ≤ 1/2 of the logits path's,
and its growth from 2,000 to 16,384 pieces ≤ 0.5 GB.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import common

NAME = "train_memory"
FULL = dict(vocabs=[2000, 16384], steps=3, students=4, batch=32, context=256, outer_every=2)
QUICK = dict(vocabs=[500, 1000], steps=2, students=2, batch=4, context=32, outer_every=2)
PATHS = {"logits": None, "hidden": "off", "hidden_compiled": "on"}
GB = 1e9


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """A few steps of one path in this fresh process; its peak RSS."""
    from minidml import TrainConfig
    from minidml.config import default_alpha

    s, vocab = spec["settings"], spec["vocab"]
    shapes = TrainConfig().students[:1] * s["students"]
    size = (vocab, s["context"], s["batch"])
    compile_ = PATHS[spec["path"]]
    if compile_ is None:
        step, _ = common.logits_step(shapes, *size, common.resolve_device("cpu"),
                                     default_alpha("wml"), s["outer_every"])
    else:
        step = common.trainer(shapes, *size, "cpu", outer_every=s["outer_every"],
                              compile=compile_).train_step
    for _ in range(s["steps"]):
        step()
    return {"peak_rss_bytes": common.proc_status()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = QUICK if args.quick else FULL
    result = common.envelope(NAME, common.resolve_device("cpu"), args.quick)
    peaks: dict[str, dict[str, int]] = {p: {} for p in PATHS}
    for vocab in s["vocabs"]:
        for path in PATHS:
            peaks[path][str(vocab)] = common.run_child(
                "bench.train_memory", {"path": path, "vocab": vocab, "settings": s}
            )["peak_rss_bytes"]
            common.log(f"[{NAME}] {path} vocab {vocab}: {peaks[path][str(vocab)] / GB:.2f} GB")
    small, large = (str(v) for v in s["vocabs"])
    r = {"hidden_over_logits_at_large_vocab": peaks["hidden"][large] / peaks["logits"][large],
         "compiled_over_logits_at_large_vocab":
             peaks["hidden_compiled"][large] / peaks["logits"][large],
         **{f"growth_{p}_gb": (peaks[p][large] - peaks[p][small]) / GB for p in PATHS}}
    applies = not args.quick
    result.update(settings={**s, "device": "cpu", "shape": "TrainConfig's default student"},
                  peak_rss_bytes=peaks, ratios=r, targets={
                      "half_at_large_vocab": common.target(
                          r["hidden_over_logits_at_large_vocab"], 0.5, True, applies),
                      "growth_gb": common.target(r["growth_hidden_gb"], 0.5, True, applies)})
    return result


def report(result: dict[str, Any]) -> str:
    p, s = result["peak_rss_bytes"], result["settings"]
    lines = [f"train_memory (peak RSS of {s['steps']} steps, K={s['students']}, batch "
             f"{s['batch']} x {s['context']}{', QUICK' if result['quick'] else ''})"]
    for path, by_vocab in p.items():
        lines.append(f"  {path:16s}" + ", ".join(f"vocab {v}: {b / GB:.2f} GB"
                                                 for v, b in by_vocab.items()))
    return "\n".join([*lines, common.targets_line(result["targets"])])


if __name__ == "__main__":
    common.child_main(child)
