"""Training across processes with ``torch.distributed``, as launched by ``torchrun``.

A process started by ``torchrun`` finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its
environment; any other process is a world of one, for which :class:`Comm` does nothing at all
(no process group, no copies: every method hands back what it was given), so a single process
runs exactly the code it always ran.

**Placement.** Students are spread over the ranks of a *peer group*; every rank of a group sees
the same batch. With more ranks than students (the world size a multiple of K) the ranks form a
``dp × student`` mesh (:func:`torch.distributed.device_mesh.init_device_mesh`): global rank
``d·s + r`` holds the students of peer rank ``r`` in data-parallel replica ``d``, takes rows
``d·B/dp … (d+1)·B/dp`` of each batch, and averages its students' gradients with the other
replicas of those students. With fewer ranks than students, a rank holds several (placed
largest first on the least loaded rank, by parameter count).

**What is communicated** (per micro-batch, inside a peer group): every student's detached
final hidden states and head weight (one all-gather, :meth:`Comm.gather_heads`; float32
unless ``peer_dtype`` is bf16), (N + V)·d numbers per student where its logits would be N·V,
so each rank evaluates the loss of its own students from hidden states, the others being
fixed members of it, as a single process does (:mod:`minidml.fused_linear`);
per step: the gradients of each student over its ``dp`` replicas (an all-reduce) and one small
all-reduce over the world of the losses and the non-finite flags, which every rank then
agrees on. The ω hypergradient splits into per-rank terms plus one all-reduce of K numbers;
its ensemble loss needs each student's held-out target log-probabilities (an all-gather of
``[N]`` vectors). Set-up, checkpoints and control decisions go through a separate gloo group
with a longer timeout, on the CPU.

**Failures.** Rank 0 alone writes the run directory; what it does alone (training the
tokenizer, tokenising, checkpointing) ends with a broadcast of its outcome, so the other ranks
stop with it instead of waiting. A collective that fails (a peer died, a timeout) raises
:class:`PeerFailure`; a rank that raises aborts its process group on the way out, so peers
blocked in a collective fail at once instead of hanging.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from .errors import MinidmlError, describe

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

T = TypeVar("T")
TIMEOUT_S = 900  # collectives of training (MINIDML_DIST_TIMEOUT overrides)
SETUP_TIMEOUT_S = 3 * 3600  # waits for rank 0's set-up (tokenizer, token file) and checkpoints


def collective_timeout() -> float:
    """Seconds a collective of training may wait: ``MINIDML_DIST_TIMEOUT``, else
    :data:`TIMEOUT_S`; anything but a positive number is a one-line error naming it."""
    text = os.environ.get("MINIDML_DIST_TIMEOUT")
    if text is None:
        return TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise MinidmlError(f"MINIDML_DIST_TIMEOUT={text}: give a positive number of seconds "
                           f"(default {TIMEOUT_S})")
    return seconds


class PeerFailure(MinidmlError):
    """This rank stops because another rank failed (a collective broke, or rank 0 reported an
    error). ``quiet``: the failing rank prints the reason itself."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


def env_world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment; (1, 0, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise MinidmlError("WORLD_SIZE/RANK/LOCAL_RANK: not integers; launch with torchrun") \
            from None
    if world < 1 or not 0 <= rank < world:
        raise MinidmlError(f"RANK {rank} / WORLD_SIZE {world}: inconsistent; launch with torchrun")
    return world, rank, local


def reports(error: BaseException) -> bool:
    """Whether this process should print ``error`` (so that a job prints it once): in a
    distributed job rank 0 prints the errors every rank meets alike, and a rank stopped by a
    peer's failure prints only a broken collective (whose cause may be nowhere else)."""
    world, rank, _ = env_world()
    if world == 1:
        return True
    if isinstance(error, PeerFailure):
        return not error.quiet
    return rank == 0


# ----------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class Placement:
    """Where K students live on ``world_size`` ranks: ``owner[i]`` is student i's peer rank
    (0 ≤ owner < ``peers``) and ``slot[i]`` its position among that rank's students."""

    world_size: int
    peers: int  # ranks per peer group (s)
    dp: int  # data-parallel replicas of each student
    owner: tuple[int, ...]
    slot: tuple[int, ...]

    @classmethod
    def plan(cls, costs: Sequence[int], world_size: int) -> Placement:
        """Largest student first onto the least loaded rank (ties: lower index)."""
        k = len(costs)
        if world_size > k and world_size % k:
            raise MinidmlError(f"world size {world_size}: with {k} students it must be at most "
                               f"{k} or a multiple of {k} (a data-parallel group per student); "
                               f"use --nproc_per_node {k * (world_size // k)} or {k}")
        peers = min(world_size, k)
        heap = [(0, 0, r) for r in range(peers)]  # (load, students held, rank)
        owner = [0] * k
        for i in sorted(range(k), key=lambda i: (-costs[i], i)):
            load, n, r = heapq.heappop(heap)
            owner[i] = r
            heapq.heappush(heap, (load + costs[i], n + 1, r))
        slot = [sum(owner[j] == owner[i] for j in range(i)) for i in range(k)]
        return cls(world_size, peers, world_size // peers, tuple(owner), tuple(slot))

    @property
    def n_students(self) -> int:
        return len(self.owner)

    def students_of(self, peer_rank: int) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.owner) if r == peer_rank)

    @property
    def max_per_rank(self) -> int:
        return max(len(self.students_of(r)) for r in range(self.peers))


# ----------------------------------------------------------------------------- the comm
def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor copied to the CPU (safe to pickle across devices)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu(v) for v in obj)
    return obj


class Comm:
    """One rank's view of the job: its students, its slice of each batch, and the collectives
    training needs. ``Comm()`` is a world of one, where every method is the identity."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 control: Any = None, backend: str | None = None):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend = backend
        self._control = control  # gloo group for objects and decisions (None: the world)
        self.placement: Placement | None = None
        self.peer_rank, self.dp_rank = 0, 0
        self.local: tuple[int, ...] = ()
        self._peer_group: ProcessGroup | None = None
        self._dp_group: ProcessGroup | None = None
        self.peer_dtype: torch.dtype | None = None  # peers' tensors sent as this (None: as is)
        self.sent_bytes: dict[str, int] = {}  # bytes this rank put into each kind of collective

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _placed(self) -> Placement:
        """The placement, which every collective of a multi-rank job needs (:meth:`place`
        sets it before any of them runs)."""
        assert self.placement is not None, "Comm.place() has not run"
        return self.placement

    @property
    def dp(self) -> int:
        return self.placement.dp if self.placement else 1

    @property
    def peers(self) -> int:
        return self.placement.peers if self.placement else 1

    # ---------------------------------------------------------------- set-up
    def place(self, costs: Sequence[int], device: torch.device, batch_sizes: Sequence[int] = (),
              peer_dtype: str = "fp32") -> Comm:
        """Place ``len(costs)`` students (costs: parameter counts) and build the mesh."""
        p = Placement.plan(costs, self.world_size)
        for b in batch_sizes:
            if b % p.dp:
                raise MinidmlError(f"--batch-size {b}: {p.dp} data-parallel replicas per student "
                                   f"(world size {self.world_size}, {p.n_students} students) "
                                   f"each take an equal share; use a multiple of {p.dp}")
        self.placement = p
        self.dp_rank, self.peer_rank = divmod(self.rank, p.peers)
        self.local = p.students_of(self.peer_rank)
        self.peer_dtype = torch.bfloat16 if peer_dtype == "bf16" and self.world_size > 1 else None
        if self.world_size > 1:
            from torch.distributed.device_mesh import init_device_mesh

            with self._collective("building the device mesh"):
                mesh = init_device_mesh(device.type, (p.dp, p.peers),
                                        mesh_dim_names=("dp", "student"))
            self._peer_group, self._dp_group = mesh.get_group("student"), mesh.get_group("dp")
        return self

    def global_rank(self, peer_rank: int, dp_rank: int = 0) -> int:
        return dp_rank * self.peers + peer_rank

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        """A broken collective becomes a one-line :class:`PeerFailure`."""
        try:
            yield
        except RuntimeError as e:  # gloo/NCCL errors, DistError included
            raise PeerFailure(f"rank {self.rank}: stopped while {what}, because another process "
                              f"of the job failed or timed out ({describe(e, 200)})") from None

    def _count(self, kind: str, *tensors: torch.Tensor) -> None:
        self.sent_bytes[kind] = self.sent_bytes.get(kind, 0) + sum(
            t.numel() * t.element_size() for t in tensors)

    # ---------------------------------------------------------------- data
    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """This replica's rows of a batch (all of it without data parallelism)."""
        if self.dp == 1:
            return t
        n = t.shape[0] // self.dp
        return t[self.dp_rank * n:(self.dp_rank + 1) * n]

    def takes(self, index: int) -> bool:
        """Whether batch ``index`` of a sequence split round-robin over replicas is ours."""
        return index % self.dp == self.dp_rank

    # ---------------------------------------------------------------- collectives
    def gather_students(self, local: Sequence[torch.Tensor], exchange: torch.dtype | None = None
                        ) -> list[torch.Tensor]:
        """All K students' tensors (same shape on every rank) from each rank's own, in student
        order; this rank's own come back as given (with their graphs), the others detached,
        sent as ``exchange`` dtype and returned in the dtype of the local ones."""
        p = self.placement
        if p is None or p.peers == 1:  # self.peers == 1
            return list(local)
        like = local[0]
        buf = torch.stack([t.detach() for t in local])
        if len(local) < p.max_per_rank:
            buf = torch.cat([buf, buf.new_zeros(p.max_per_rank - len(local), *like.shape)])
        if exchange is not None and buf.dtype != exchange:
            buf = buf.to(exchange)
        out = [torch.empty_like(buf) for _ in range(p.peers)]
        self._count("all_gather", buf)
        with self._collective("exchanging the students' outputs"):
            torch.distributed.all_gather(out, buf.contiguous(), group=self._peer_group)
        return [local[p.slot[i]] if p.owner[i] == self.peer_rank
                else out[p.owner[i]][p.slot[i]].to(like.dtype) for i in range(p.n_students)]

    def gather_heads(self, hidden: Sequence[torch.Tensor], heads: Sequence[torch.Tensor],
                     widths: Sequence[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every student's final hidden states [N, d_i] and head weight [V, d_i], in student
        order, from each rank's own (``widths``: every student's d_i): what the loss from
        hidden states needs of the peers (:mod:`minidml.fused_linear`), (N + V)·d numbers
        per student instead of N·V logits. Each travels in one all-gather, zero-padded to the
        widest student (which leaves h Wᵀ as it was) and as ``peer_dtype``, and comes back at
        its own width; this rank's own come back as given, with their graphs."""
        if self.peers == 1:
            return list(hidden), list(heads)
        n, d = hidden[0].shape[0], max(widths)
        like = heads[0]
        both = [torch.cat([h.detach().to(like.dtype), w.detach()]) for h, w in
                zip(hidden, heads, strict=True)]
        both = [torch.nn.functional.pad(t, (0, d - t.shape[1])) for t in both]
        every = self.gather_students(both, self.peer_dtype)
        mine = dict(zip(self.local, zip(hidden, heads, strict=True), strict=True))
        out_h, out_w = [], []
        for i, t in enumerate(every):
            h, w = mine[i] if i in mine else (t[:n, :widths[i]].to(hidden[0].dtype),
                                              t[n:, :widths[i]].contiguous())
            out_h.append(h)
            out_w.append(w)
        return out_h, out_w

    def scatter(self, local: Sequence[torch.Tensor], fill: torch.Tensor) -> list[torch.Tensor]:
        """A K list holding this rank's tensors at its students' places and ``fill`` elsewhere
        (the list itself in a world of one)."""
        if self.world_size == 1:
            return list(local)
        out = [fill] * self._placed.n_students
        for j, i in enumerate(self.local):
            out[i] = local[j]
        return out

    def average_gradients(self, models: Sequence[torch.nn.Module]) -> None:
        """Average the ``.grad`` of this rank's students over their data-parallel replicas."""
        if self.dp == 1:
            return
        for m in models:
            self.average([p.grad for p in m.parameters() if p.grad is not None], "gradients")

    def average(self, tensors: Sequence[torch.Tensor], what: str = "gradients") -> None:
        """In place: the mean of ``tensors`` over this rank's data-parallel replicas."""
        if self.dp == 1 or not tensors:
            return
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        flat = _flatten_dense_tensors(list(tensors))
        self._count("all_reduce", flat)
        with self._collective(f"averaging {what}"):
            torch.distributed.all_reduce(flat, group=self._dp_group)
        flat /= self.dp
        for t, v in zip(tensors, _unflatten_dense_tensors(flat, list(tensors)), strict=True):
            t.copy_(v)

    def owned_mask(self, device: torch.device) -> torch.Tensor:
        mask = torch.zeros(self._placed.n_students, dtype=torch.bool)
        mask[list(self.local)] = True
        return mask.to(device)

    def step_summary(self, stats: torch.Tensor, norms: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(stats [R, K] averaged over the batch, finite [K]) agreed by every rank, from this
        rank's ``stats`` (rows of per-student losses, row 0 the loss) and its students'
        gradient ``norms``. One all-reduce; no host synchronisation."""
        if self.world_size == 1:
            return stats, torch.isfinite(norms) & torch.isfinite(stats[0])
        owned = self.owned_mask(stats.device)
        bad = torch.zeros_like(stats[0])
        bad[list(self.local)] = (~torch.isfinite(norms)).to(bad.dtype)
        buf = torch.cat([torch.where(owned, stats, torch.zeros_like(stats)), bad[None]])
        self._count("all_reduce", buf)
        with self._collective("summing the step's losses"):
            torch.distributed.all_reduce(buf)
        stats = buf[:-1] / self.dp
        return stats, (buf[-1] == 0) & torch.isfinite(stats[0])

    def sum_hypergradient(self, direct: torch.Tensor, second: torch.Tensor,
                          loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grad, direct, loss) of the whole job from this rank's parts: ``direct`` and ``loss``
        are alike on every rank of a peer group, ``second`` holds only this rank's students'
        terms. One all-reduce of 2K + 1 numbers."""
        if self.world_size == 1:
            return direct - second, direct, loss
        lead = self.peer_rank == 0
        direct, second, loss = direct.detach(), second.detach(), loss.detach()
        buf = torch.cat([direct if lead else torch.zeros_like(direct), second,
                         (loss if lead else torch.zeros_like(loss)).reshape(1).to(direct.dtype)])
        self._count("all_reduce", buf)
        with self._collective("summing the hypergradient"):
            torch.distributed.all_reduce(buf)
        buf = buf / self.dp
        k = direct.shape[0]
        return buf[:k] - buf[k:2 * k], buf[:k], buf[-1].to(loss.dtype)

    def sum_counts(self, total: torch.Tensor, lead_only: torch.Tensor) -> tuple[torch.Tensor,
                                                                                torch.Tensor]:
        """Sums over the job of per-student ``total`` [K] (this rank's students' entries) and of
        ``lead_only`` (alike within a peer group, e.g. the ensemble's sum and a token count)."""
        if self.world_size == 1:
            return total, lead_only
        owned = self.owned_mask(total.device)
        lead = self.peer_rank == 0
        buf = torch.cat([torch.where(owned, total, torch.zeros_like(total)),
                         lead_only if lead else torch.zeros_like(lead_only)])
        self._count("all_reduce", buf)
        with self._collective("summing the validation loss"):
            torch.distributed.all_reduce(buf)
        k = total.shape[0]
        return buf[:k], buf[k:]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (on the CPU control group: no device sync)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([int(flag)])
        self._count("control", t)
        with self._collective("agreeing whether to stop"):
            torch.distributed.all_reduce(t, group=self._control)
        return bool(t.item())

    def sync_students(self, students: Sequence[torch.nn.Module]) -> None:
        """Every rank's copy of every student from its owner (its first replica)."""
        if self.world_size == 1:
            return
        p = self._placed
        with self._collective("sharing the students' weights"), torch.no_grad():
            for i, s in enumerate(students):
                src = self.global_rank(p.owner[i])
                for t in [*s.parameters(), *s.buffers()]:
                    if self.rank == src:
                        self._count("broadcast", t)
                    torch.distributed.broadcast(t.data, src=src)

    def gather_states(self, states: Sequence[Any]) -> list[Any]:
        """Rank 0: the K per-student objects (e.g. optimiser states), each from its owner;
        other ranks: their own, None elsewhere. Tensors arrive on the CPU."""
        if self.world_size == 1:
            return list(states)
        mine = ({i: _cpu(states[i]) for i in self.local} if self.dp_rank == 0 else {})
        got: list[Any] | None = [None] * self.world_size if self.is_main else None
        with self._collective("collecting optimiser states"):
            torch.distributed.gather_object(mine, got, dst=0, group=self._control)
        if got is None:  # not rank 0
            return [states[i] if i in self.local else None for i in range(len(states))]
        merged: dict[int, Any] = {}
        for part in got:
            merged.update(part)
        return [merged[i] for i in range(len(states))]

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if self.world_size == 1:
            return obj
        box = [obj if self.rank == src else None]
        with self._collective("receiving rank 0's data"):
            torch.distributed.broadcast_object_list(box, src=src, group=self._control)
        return box[0]

    def on_main(self, fn: Callable[[], T], share: bool = False) -> T:
        """Run ``fn`` on rank 0 only; the others wait for its outcome (and, with ``share``,
        receive its result, pickled). An error on rank 0 stops every rank: rank 0 raises it,
        the others a quiet :class:`PeerFailure`."""
        if self.world_size == 1:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                result = fn()
                outcome = ("ok", result if share else None)
            except BaseException as e:
                with contextlib.suppress(PeerFailure):  # the others may be gone already
                    self.broadcast_object(("error", f"{type(e).__name__}: {e}"))
                raise
        outcome = self.broadcast_object(outcome)
        if outcome[0] == "error":
            raise PeerFailure(f"rank {self.rank}: stopped because rank 0 failed "
                              f"({outcome[1]})", quiet=True)
        return result if self.is_main else outcome[1]

    def first_on_main(self, fn: Callable[[], T]) -> T:
        """``fn`` on rank 0, then on the others (e.g. filling a cache that the others read)."""
        if self.world_size == 1:
            return fn()
        result = self.on_main(fn)
        return result if self.is_main else fn()


def local_comm(n_students: int) -> Comm:
    """A world of one holding ``n_students`` students."""
    return Comm().place([1] * n_students, torch.device("cpu"))


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[Comm]:
    """The job this process belongs to: a world of one unless launched by torchrun.

    Under torchrun, initialises the process group (NCCL when training on CUDA, else gloo)
    unless the caller already did, plus a gloo group for set-up and decisions; destroys what
    it created at the end; on an exception aborts the group first, so that peers blocked in a
    collective fail instead of hanging.
    """
    world, rank, local_rank = env_world()
    if world == 1:
        yield Comm()
        return
    import torch.distributed as dist

    if not dist.is_available():
        raise MinidmlError("torch.distributed is not available in this torch build; "
                           "run without torchrun")
    timeout = timedelta(seconds=collective_timeout())
    created = not dist.is_initialized()
    if created:
        cuda = (device == "auto" or device.startswith("cuda")) and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        backend = "nccl" if cuda and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend, timeout=timeout)
    backend = dist.get_backend()
    control = dist.new_group(backend="gloo", timeout=timedelta(seconds=SETUP_TIMEOUT_S))
    comm = Comm(rank, world, local_rank, control, backend)
    try:
        yield comm
    except BaseException:
        abort()
        raise
    if created:
        dist.destroy_process_group()


def abort() -> None:
    """Tear the process group down at once (peers waiting on this rank then fail)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    with contextlib.suppress(Exception):
        if dist.get_backend() == "nccl":
            dist.distributed_c10d._abort_process_group()
            return
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
