"""Distributed training on the CPU (gloo), 1 rank against 2: step time and bytes sent.

K = 2 students of one shape, mode ``wml``, random tokens. Each configuration is a torchrun
job of its own (``python -m torch.distributed.run --nproc_per_node=W -m bench.distributed
--child SPEC``) whose ranks time ``Trainer.train_step`` over whole outer cycles after warm-up
steps, counting the bytes each rank puts into each kind of collective
(``Comm.sent_bytes``):

* ``w1`` (the baseline): one process, all the CPU threads (no process group);
* ``w2``: two ranks, one student each, the threads shared out (``--quick``: one thread each);
* ``w2_bf16``: ``w2`` with ``peer_dtype = "bf16"``.

A step takes as long as its slowest rank; rounds alternate the configurations. The check
(``targets``): the all-gather bytes equal the analytic count, per step and rank its students'
hidden states and head weights, (B·T + V)·d numbers each at 4 bytes (2 for bf16), plus B·T
held-out target log-probabilities (4 bytes) per outer step.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench import common

NAME = "distributed"
FULL = dict(k=2, vocab=8192, shape=(4, 128, 4), batch=16, context=128, outer_every=10,
            warmup=2, cycles=2, rounds=2)
QUICK = dict(k=2, vocab=512, shape=(2, 64, 2), batch=4, context=32, outer_every=5,
             warmup=1, cycles=1, rounds=1)
CONFIGS = {"w1": (1, "fp32"), "w2": (2, "fp32"), "w2_bf16": (2, "bf16")}


def _threads(world: int, quick: bool) -> int:
    return 1 if quick else max(1, (os.cpu_count() or 1) // world)


def child(spec: dict[str, Any]) -> None:
    """One rank of a job: time the steps, write ``rank-R.json`` into ``spec["out"]``."""
    from minidml import Shape
    from minidml.distributed import env_world, session
    from minidml.model import StudentConfig

    s = spec["settings"]
    world, rank, _ = env_world()
    torch.set_num_threads(_threads(world, spec["quick"]))
    shapes = [Shape(*s["shape"])] * s["k"]
    params = StudentConfig.from_shape(shapes[0], s["vocab"], s["context"]).n_params
    with session("cpu") as comm:
        comm.place([params] * s["k"], torch.device("cpu"), (s["batch"],), spec["peer_dtype"])
        tr = common.trainer(shapes, s["vocab"], s["context"], s["batch"], "cpu", comm=comm,
                            mode="wml", outer_every=s["outer_every"], compile="off",
                            peer_dtype=spec["peer_dtype"], steps=10_000)
        for _ in range(s["warmup"]):
            tr.train_step()
        while tr.step % s["outer_every"]:  # time whole cycles
            tr.train_step()
        times, sent = [], []
        for _ in range(s["cycles"] * s["outer_every"]):
            before = dict(comm.sent_bytes)
            t0 = time.perf_counter()
            tr.train_step()
            times.append(time.perf_counter() - t0)
            sent.append({k: v - before.get(k, 0) for k, v in comm.sent_bytes.items()})
        comm.any(False)  # every rank finishes timing before any leaves
    (Path(spec["out"]) / f"rank-{rank}.json").write_text(json.dumps(
        {"step_seconds": times, "sent_bytes": sent, "threads": torch.get_num_threads()}))


def _job(world: int, peer_dtype: str, s: dict[str, Any], quick: bool, out: Path
         ) -> dict[str, Any]:
    """One torchrun job: per step, the slowest rank's time; per rank, bytes sent per step."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = {"settings": s, "quick": quick, "peer_dtype": peer_dtype, "out": str(out)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
         "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "bench.distributed",
         "--child", json.dumps(spec)], capture_output=True, text=True, timeout=1800,
        env={**os.environ, "OMP_NUM_THREADS": str(_threads(world, quick))},
        cwd=common.REPO_ROOT)
    if proc.returncode != 0:
        raise common.BenchError(f"torchrun job (world size {world}) failed "
                                f"({proc.returncode}): {proc.stderr[-2000:]}")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(world)]
    n = len(ranks[0]["step_seconds"])
    kinds = sorted({k for r in ranks for st in r["sent_bytes"] for k in st})
    return {"step_seconds": [max(r["step_seconds"][i] for r in ranks) for i in range(n)],
            "bytes_per_step_by_rank": [{k: sum(st.get(k, 0) for st in r["sent_bytes"]) / n
                                        for k in kinds} for r in ranks]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = QUICK if args.quick else FULL
    common.ensure_cache_env()
    result = common.envelope(NAME, torch.device("cpu"), args.quick)
    jobs: dict[str, list[dict[str, Any]]] = {k: [] for k in CONFIGS}
    with common.temp_dir(NAME) as tmp:
        for r in range(s["rounds"]):
            for name, (world, dtype) in CONFIGS.items():
                out = tmp / f"{name}-{r}"
                out.mkdir()
                job, busy = common.busy_others(partial(_job, world, dtype, s, args.quick, out))
                jobs[name].append({**job, "others_cpu_share": busy})
                common.log(f"[{NAME}] round {r + 1} {name}: fastest step "
                           f"{min(job['step_seconds']) * 1e3:.1f} ms")
    configs = {}
    for name, js in jobs.items():
        steps = sorted(t for j in js for t in j["step_seconds"])
        configs[name] = {"step_seconds": {"min": steps[0], "median": steps[len(steps) // 2],
                                          "times": steps},
                         "others_cpu_share": [j["others_cpu_share"] for j in js],
                         "bytes_per_step_by_rank": js[0]["bytes_per_step_by_rank"]}
    tokens, d = s["batch"] * s["context"], s["shape"][1]
    local = s["k"] // 2
    analytic = {dt: local * ((tokens + s["vocab"]) * d * size + tokens * 4 / s["outer_every"])
                for dt, size in (("fp32", 4), ("bf16", 2))}
    gathered = {dt: configs[n]["bytes_per_step_by_rank"][0].get("all_gather", 0)
                for dt, n in (("fp32", "w2"), ("bf16", "w2_bf16"))}
    med = {k: v["step_seconds"]["median"] for k, v in configs.items()}
    result.update(
        settings={**s, "configs": {k: {"world_size": w, "peer_dtype": dt}
                                   for k, (w, dt) in CONFIGS.items()}},
        configs=configs, analytic_all_gather_bytes_per_step_per_rank=analytic,
        ratios={"w2_step_over_w1_step_median": med["w2"] / med["w1"],
                "w2_bf16_step_over_w1_step_median": med["w2_bf16"] / med["w1"],
                "bf16_gather_bytes_over_fp32": gathered["bf16"] / max(1, gathered["fp32"])},
        targets={f"gather_bytes_{dt}": {"target": f"== {analytic[dt]:.1f}", "value": gathered[dt],
                                        "met": abs(gathered[dt] - analytic[dt]) < 1,
                                        "applies": True} for dt in analytic})
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"distributed (cpu, gloo{', QUICK' if result['quick'] else ''})"]
    for name, c in result["configs"].items():
        st, per = c["step_seconds"], c["bytes_per_step_by_rank"][0]
        lines.append(f"  {name:8s} step {st['median'] * 1e3:8.1f} ms median, "
                     f"{st['min'] * 1e3:8.1f} fastest; sent per step and rank "
                     + ", ".join(f"{k} {v / 2**10:.1f} KiB" for k, v in per.items()))
    r = result["ratios"]
    lines.append(f"  2 ranks / 1 rank: {r['w2_step_over_w1_step_median']:.2f} (fp32), "
                 f"{r['w2_bf16_step_over_w1_step_median']:.2f} (bf16); bf16/fp32 bytes "
                 f"{r['bf16_gather_bytes_over_fp32']:.2f}")
    return "\n".join([*lines, common.targets_line(result["targets"])])


if __name__ == "__main__":
    common.child_main(child)
