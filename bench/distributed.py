"""Distributed training on the CPU (gloo): step time and bytes communicated, 1 rank vs 2.

K = 2 students of one shape, mode ``wml`` (``outer_every`` 10, exact hypergradient), random
tokens. Each configuration is a ``torchrun`` job of its own (``python -m torch.distributed.run
--nproc_per_node=W -m bench.distributed --child ...``) that times ``Trainer.train_step`` over
whole outer cycles after warm-up steps, and counts the bytes each rank puts into collectives
(``Comm.sent_bytes``: the peers' logits all-gather, the all-reduces of losses and of the
hypergradient's K numbers, the stop flag on the control group). Configurations:

* ``w1``: one process (torchrun with one process is a plain process: no process group), with
  all the CPU threads;
* ``w2``: two ranks, one student each, the CPU threads shared out between them (so both
  configurations have the same CPUs; ``--quick`` gives every rank one thread, since tiny ops
  and OpenMP barriers on a busy machine can otherwise take many times longer);
* ``w2_bf16``: the same with ``peer_dtype = "bf16"`` (half the bytes of the logits).

Rounds alternate the configurations; the fastest step and the median are reported. The check
(``targets``): the measured all-gather bytes equal the analytic count
(K/W students' logits of B·T tokens × V × dtype size per step, plus the held-out target
log-probabilities once per outer step).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import common

NAME = "distributed"
FULL = dict(k=2, vocab=8192, shape=(4, 128, 4), batch=16, context=128, outer_every=10,
            warmup=2, cycles=2, rounds=2)
QUICK = dict(k=2, vocab=512, shape=(2, 64, 2), batch=4, context=32, outer_every=5,
             warmup=1, cycles=1, rounds=1)
CONFIGS = {"w1": (1, "fp32"), "w2": (2, "fp32"), "w2_bf16": (2, "bf16")}


def child(args: argparse.Namespace) -> None:
    """One rank of a job: time the steps, write ``rank-R.json`` into ``--child``."""
    from minidml import Shape, Student, TrainConfig
    from minidml.data import Batches
    from minidml.distributed import env_world, session
    from minidml.rundir import student_configs
    from minidml.trainer import Trainer

    s = QUICK if args.quick else FULL
    world, rank, _ = env_world()
    torch.set_num_threads(_threads(world, args.quick))
    tokens = np.random.default_rng(0).integers(0, s["vocab"], size=400_000, dtype=np.uint16)
    batches = Batches(tokens, s["context"], s["batch"])
    cfg = TrainConfig(students=(Shape(*s["shape"]),) * s["k"], mode="wml",
                      context=s["context"], batch_size=s["batch"], steps=10_000,
                      outer_every=s["outer_every"], device="cpu", peer_dtype=args.peer_dtype)
    with session("cpu") as comm:
        torch.manual_seed(0)
        scfgs = student_configs(cfg, s["vocab"])
        comm.place([c.n_params for c in scfgs], torch.device("cpu"), (s["batch"],),
                   cfg.peer_dtype)
        trainer = Trainer(cfg, [Student(c) for c in scfgs], batches, comm=comm)
        for _ in range(s["warmup"]):
            trainer.train_step()
        while trainer.step % s["outer_every"]:  # start timing at a cycle boundary
            trainer.train_step()
        times, sent = [], []
        for _ in range(s["cycles"] * s["outer_every"]):
            before = dict(comm.sent_bytes)
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
            sent.append({k: v - before.get(k, 0) for k, v in comm.sent_bytes.items()})
        comm.any(False)  # every rank finishes timing before any leaves
    out = {"rank": rank, "world_size": world, "threads": torch.get_num_threads(),
           "step_seconds": times, "sent_bytes": sent, "local_students": list(comm.local),
           "n_params": scfgs[0].n_params}
    (Path(args.child) / f"rank-{rank}.json").write_text(json.dumps(out))


def _threads(world: int, quick: bool) -> int:
    return 1 if quick else max(1, (os.cpu_count() or 1) // world)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _job(world: int, peer_dtype: str, quick: bool, out: Path) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
           "--master-addr=127.0.0.1", f"--master-port={_port()}", "-m", "bench.distributed",
           "--child", str(out), "--peer-dtype", peer_dtype, *(["--quick"] if quick else [])]
    threads = str(_threads(world, quick))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "OMP_NUM_THREADS": threads},
                          cwd=common.REPO_ROOT)
    if proc.returncode != 0:
        raise common.BenchError(f"torchrun job (world size {world}) failed "
                                f"({proc.returncode}): {proc.stderr[-2000:]}")
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(world)]


def _per_step(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step figures of one job: the slowest rank's time, each rank's bytes by kind."""
    n = len(ranks[0]["step_seconds"])
    step = [max(r["step_seconds"][i] for r in ranks) for i in range(n)]
    kinds = sorted({k for r in ranks for s in r["sent_bytes"] for k in s})
    per_rank = [{k: sum(s.get(k, 0) for s in r["sent_bytes"]) / n for k in kinds}
                for r in ranks]
    return {"step_seconds": step, "bytes_per_step_by_rank": per_rank,
            "bytes_per_step_total": sum(sum(p.values()) for p in per_rank)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = torch.device("cpu")  # gloo on the CPU: the comparison this benchmark makes
    common.ensure_cache_env()
    result = common.envelope(NAME, device, args.quick)
    result["settings"] = {**s, "configs": {k: {"world_size": w, "peer_dtype": d}
                                           for k, (w, d) in CONFIGS.items()},
                          "threads_per_rank": {k: _threads(w, args.quick)
                                               for k, (w, _) in CONFIGS.items()}}
    common.log(f"[{NAME}] K={s['k']} students {s['shape']}, vocabulary {s['vocab']}, "
               f"batch {s['batch']}x{s['context']}, {', '.join(CONFIGS)}")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CONFIGS}
    with common.temp_dir(NAME) as tmp:
        for r in range(s["rounds"]):
            for name, (world, dtype) in CONFIGS.items():
                if args.wait_idle:
                    common.wait_for_idle(args.wait_idle)
                out = tmp / f"{name}-{r}"
                out.mkdir()
                runs[name].append(_per_step(_job(world, dtype, args.quick, out)))
                common.log(f"  round {r} {name}: median step "
                           f"{np.median(runs[name][-1]['step_seconds']) * 1e3:.1f} ms")
    configs = {}
    for name, jobs in runs.items():
        steps = [t for j in jobs for t in j["step_seconds"]]
        configs[name] = {"step_seconds": common.summary(steps),
                         "bytes_per_step_by_rank": jobs[0]["bytes_per_step_by_rank"],
                         "bytes_per_step_total": jobs[0]["bytes_per_step_total"]}
    result["configs"] = configs
    tokens = s["batch"] * s["context"]
    per_rank_students = s["k"] // 2
    analytic = {d: per_rank_students * (tokens * s["vocab"] * size
                                        + tokens * 4 / s["outer_every"])  # + target log-probs
                for d, size in (("fp32", 4), ("bf16", 2))}
    measured = {"w2": configs["w2"]["bytes_per_step_by_rank"][0].get("all_gather", 0),
                "w2_bf16": configs["w2_bf16"]["bytes_per_step_by_rank"][0].get("all_gather", 0)}
    med = {k: v["step_seconds"]["median"] for k, v in configs.items()}
    fastest = {k: v["step_seconds"]["min"] for k, v in configs.items()}
    result["ratios"] = {
        "w2_step_over_w1_step_median": med["w2"] / med["w1"],
        "w2_step_over_w1_step_fastest": fastest["w2"] / fastest["w1"],
        "w2_bf16_step_over_w1_step_median": med["w2_bf16"] / med["w1"],
        "bf16_gather_bytes_over_fp32": measured["w2_bf16"] / max(1, measured["w2"]),
    }
    result["analytic_all_gather_bytes_per_step_per_rank"] = analytic
    result["targets"] = {
        "gather_bytes_fp32": {"target": analytic["fp32"], "value": measured["w2"],
                              "met": abs(measured["w2"] - analytic["fp32"]) < 1},
        "gather_bytes_bf16": {"target": analytic["bf16"], "value": measured["w2_bf16"],
                              "met": abs(measured["w2_bf16"] - analytic["bf16"]) < 1},
    }
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    c, r = result["configs"], result["ratios"]

    def line(name: str) -> str:
        st = c[name]["step_seconds"]
        per = c[name]["bytes_per_step_by_rank"]
        return (f"  {name:8s} step {st['median'] * 1e3:8.1f} ms median, {st['min'] * 1e3:8.1f} "
                f"fastest; sent per step and rank {sum(per[0].values()) / 2**20:8.2f} MiB "
                f"({', '.join(f'{k} {v / 2**10:.1f} KiB' for k, v in per[0].items())})")

    return "\n".join([
        f"distributed (cpu, gloo{', QUICK' if result['quick'] else ''})",
        *(line(n) for n in c),
        f"  2 ranks / 1 rank step time: {r['w2_step_over_w1_step_median']:.2f} (median), "
        f"{r['w2_step_over_w1_step_fastest']:.2f} (fastest); bf16 exchange "
        f"{r['w2_bf16_step_over_w1_step_median']:.2f}; bf16/fp32 bytes "
        f"{r['bf16_gather_bytes_over_fp32']:.2f}",
        "  gather bytes = analytic: "
        + ", ".join(f"{k} {'yes' if t['met'] else 'NO'}" for k, t in result["targets"].items()),
    ])


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one rank of a job
    parser.add_argument("--peer-dtype", default="fp32", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    _options(parser)
    known, _ = parser.parse_known_args(argv)
    if known.child:  # a rank of a torchrun job, not the benchmark itself
        common.add_common_options(parser)
        child(parser.parse_args(argv))
        return 0
    return common.standalone(NAME, __doc__, run, report, argv, _options)


if __name__ == "__main__":
    sys.exit(main())
