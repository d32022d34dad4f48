"""Learning the peer weights ω by bi-level optimisation.

Every few inner steps, on a held-out batch (x', y') that the inner loop never trains on:

    θ_i'(ω) = θ_i − η · ∇_θi L_i(θ, ω)                       one unrolled inner step
    L_out(ω) = CE(log Σ_i ω_i p_i(x'; θ_i'(ω)), y')          the ω-weighted ensemble's loss
    ω ← ω ⊙ exp(−β · dL_out/dω) / Σ(…)                       mirror descent on the simplex

The unrolled step is plain gradient descent with the optimiser's current learning rate η (as in
DARTS), although the real inner optimiser is AdamW; weight decay and clipping are left out of it.
Any step affine in the gradient, θ' = b − s ⊙ g with b and s constant in ω (an :class:`Unroll`),
can take its place: :func:`adam_unroll` is AdamW's own step with its preconditioner held
constant. The formula below then reads s_i ⊙ v_i where it has η·v_i.

**The exact hypergradient without a nested graph.** With v_i = ∇_θi' L_out (one forward and
backward of the ensemble loss at θ'), and since only the KL part of L_i depends on ω,

    dL_out/dω_k = ∂L_out/∂ω_k − η·α·T² · Σ_i Σ_{j≠i} (∂ω̃_j^{(i)}/∂ω_k) · D_ij,
    D_ij = ⟨v_i, ∇_θi KL(p_j ‖ p_i)⟩ = mean_tokens ⟨(p_i − p_j)/T, dz_i⟩,

where dz_i is the forward-mode derivative (``torch.func.jvp``) of student i's logits on the
training inputs along v_i. That costs one validation forward+backward and one JVP per student,
reusing the inner step's gradient for θ'. :func:`hypergradient_nested` differentiates through
the unrolled step with nested ``torch.func.grad`` instead: simpler, slower, and the yardstick.

Variants: ``exact`` (above), ``first-order`` (only ∂L_out/∂ω: θ' taken as constant), ``fd``
(D by central finite differences along v_i, DARTS-style). Outer objectives: ``ensemble`` (the
ensemble's cross-entropy, above) and ``sum-ce``, Σ_i ω_i·CE_i(θ_i'), which is what the
paper's code optimises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import HYPERGRADS
from .distributed import Comm
from .fused_linear import linear_peer_directional, linear_target_log_probs
from .losses import mixture_log_probs, mutual_loss, peer_weights, target_log_probs
from .model import Student, trunk_call

VARIANTS = HYPERGRADS  # how the hypergradient is taken (TrainConfig.hypergrad)
OBJECTIVES = ("ensemble", "sum-ce")
Params = dict[str, torch.Tensor]


def outer_loss(logits: Sequence[torch.Tensor], targets: torch.Tensor, omega: torch.Tensor,
               objective: str = "ensemble") -> torch.Tensor:
    """The outer objective on held-out logits (K tensors [N, V]) and targets [N]."""
    return combine_outer(outer_terms(logits, targets, objective, omega.dtype), omega, objective)


def outer_terms(logits: Sequence[torch.Tensor], targets: torch.Tensor, objective: str,
                dtype: torch.dtype) -> torch.Tensor:
    """What each student contributes to the outer objective, whatever the others do: its
    target log-probabilities [K, N] (``ensemble``) or its cross-entropy [K] (``sum-ce``, in
    ``dtype``). Students on other ranks send theirs (see :mod:`minidml.distributed`)."""
    if objective == "ensemble":
        return target_log_probs(logits, targets)
    if objective == "sum-ce":
        return torch.stack([F.cross_entropy(z.to(dtype), targets) for z in logits])
    raise ValueError(f"unknown outer objective {objective!r}; choose from {OBJECTIVES}")


def combine_outer(terms: torch.Tensor, omega: torch.Tensor, objective: str) -> torch.Tensor:
    """The outer objective from every student's :func:`outer_terms`."""
    if objective == "ensemble":
        return -mixture_log_probs(terms, omega).mean()
    return (omega * terms).sum()


def mirror_step(omega: torch.Tensor, grad: torch.Tensor, lr: float,
                max_step: float = 20.0) -> torch.Tensor:
    """Exponentiated-gradient step ``ω ⊙ exp(−lr·g) / Σ``, computed in log space.

    Non-finite gradient entries count as 0 and each exponent is clipped to ±``max_step``, so
    ω stays a probability vector whatever the gradient (no host synchronisation).
    """
    step = (lr * grad).nan_to_num(0.0, 0.0, 0.0).clamp(-max_step, max_step)
    log_w = omega.clamp_min(torch.finfo(omega.dtype).tiny).log() - step
    return torch.softmax(log_w, dim=0)


@dataclass(frozen=True)
class Hypergradient:
    grad: torch.Tensor  # dL_out/dω, [K]
    direct: torch.Tensor  # ∂L_out/∂ω with θ' held fixed (the first-order part), [K]
    outer_loss: torch.Tensor  # L_out at θ'(ω), a scalar


def _params(model: torch.nn.Module) -> Params:
    return {name: p.detach() for name, p in model.named_parameters()}


def unrolled(students: Sequence[torch.nn.Module], lr: float) -> list[Params]:
    """θ' = θ − lr·∇θ from each parameter's current ``.grad`` (missing gradients count as 0)."""
    return sgd_unroll(students, lr).step(students)


@dataclass(frozen=True)
class Unroll:
    """The unrolled inner step, affine in the gradient: θ_i' = base_i − scale_i ⊙ ∇θ_i L_i.

    ``base`` and ``scale`` are constants of ω (per student, per parameter name; ``scale`` may
    be one number for every parameter), so dθ'/dω = −scale ⊙ d∇L/dω and the exact
    hypergradient takes the tangents v_i ⊙ scale_i (see the module docstring)."""

    base: list[Params]
    scale: list[Params] | float

    def scale_of(self, i: int, name: str) -> torch.Tensor | float:
        return self.scale if isinstance(self.scale, (int, float)) else self.scale[i][name]

    def step(self, students: Sequence[torch.nn.Module]) -> list[Params]:
        """θ' from each parameter's current ``.grad`` (missing gradients count as 0)."""
        return [{n: (self.base[i][n] - self.scale_of(i, n) * p.grad.detach())
                 if p.grad is not None else self.base[i][n]
                 for n, p in s.named_parameters()} for i, s in enumerate(students)]


def sgd_unroll(students: Sequence[torch.nn.Module], lr: float) -> Unroll:
    """θ' = θ − lr·g: plain gradient descent at the optimiser's learning rate (DARTS)."""
    return Unroll([_params(s) for s in students], float(lr))


def adam_unroll(students: Sequence[torch.nn.Module], optimizers: Sequence[torch.optim.Optimizer],
                lr: float, max_norm: float | None = None) -> Unroll:
    """The step AdamW is about to take, with its preconditioner held constant.

    AdamW (torch's, ``amsgrad`` off) moves θ to θ(1 − ηλ) − η·m̂/(√v̂ + ε) with m = β1·m₀ +
    (1−β1)·g, v = β2·v₀ + (1−β2)·g², m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ). Holding
    P = 1/(√v̂ + ε) (computed with the current gradient) constant, the step is affine in g:

        base  = θ(1 − ηλ) − η·β1·m₀·P/(1−β1ᵗ),      scale = η·(1−β1)·P/(1−β1ᵗ)

    ``max_norm`` (the run's gradient clipping; None or 0: none) takes the gradient AdamW will
    see, c·g with c = min(1, max_norm / (‖g‖ + 1e-6)) over each student's parameters (as
    ``clip_grad_norm_``), with c held constant too: the scale is then c times the above. At
    the current ω this is exactly the step AdamW takes. A parameter without a gradient is
    left where it is (AdamW skips it)."""
    base, scale = [], []
    for s, opt in zip(students, optimizers, strict=True):
        group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
        clip: float | torch.Tensor = 1.0
        grads = [p.grad.detach() for p in s.parameters() if p.grad is not None]
        if max_norm is not None and max_norm > 0 and grads:  # clip_grad_norm_'s factor
            clip = torch.clamp(max_norm / (torch.nn.utils.get_total_norm(grads) + 1e-6), max=1.0)
        b, c = {}, {}
        for name, p in s.named_parameters():
            g_ = group_of[id(p)]
            theta = p.detach()
            if p.grad is None:
                b[name], c[name] = theta, torch.zeros_like(theta)
                continue
            beta1, beta2 = g_["betas"]
            state = opt.state.get(p, {})
            t = float(state["step"]) + 1 if "step" in state else 1.0
            m0 = state.get("exp_avg", torch.zeros_like(theta))
            v0 = state.get("exp_avg_sq", torch.zeros_like(theta))
            grad = p.grad.detach() * clip
            v = beta2 * v0 + (1 - beta2) * grad * grad
            bc1, bc2 = 1 - beta1**t, 1 - beta2**t
            precond = 1.0 / ((v / bc2).sqrt() + g_["eps"])
            b[name] = theta * (1 - lr * g_["weight_decay"]) - lr * beta1 / bc1 * m0 * precond
            c[name] = clip * lr * (1 - beta1) / bc1 * precond
        base.append(b)
        scale.append(c)
    return Unroll(base, scale)


def peer_kl_directional(students: Sequence[torch.nn.Module], tangents: Sequence[Params],
                        inputs: Sequence[torch.Tensor], temperature: float,
                        method: str = "exact", eps: float = 1e-3,
                        logits: Sequence[Sequence[torch.Tensor]] | None = None,
                        rows: Sequence[int] | None = None,
                        hidden: Sequence[Sequence[torch.Tensor]] | None = None,
                        heads: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    r"""D[i, j] = ⟨v_i, ∇_θi mean_tokens KL(p_j ‖ p_i)⟩ over the training ``inputs``.

    ``exact``: a JVP of each student's logits along v_i. ``fd``: the central difference
    [KL(p_j ‖ p_i(θ_i + εv_i)) − KL(p_j ‖ p_i(θ_i − εv_i))] / 2ε with ε scaled to v_i's norm.
    Peers stay at θ, as the detached targets of the inner loss do. Inputs are weighted by
    their token counts, matching a loss averaged over all tokens of the step. ``logits``, the
    students' logits at θ on each input if the caller has them, saves a forward pass.

    ``hidden``, the :class:`~minidml.model.Student`\ s' final hidden states [tokens, d_i] at θ
    on each input, and ``heads``, their head weights at θ (default: the students' own),
    computes ``exact`` from them instead, in row chunks
    (:func:`~minidml.fused_linear.linear_peer_directional`): no K×N×V tensor. ``rows``
    restricts D to the rows of those students (``tangents`` then holds theirs; the other rows
    are 0): every student's hidden states and heads are needed, the others' as constants.
    """
    k = len(students)
    rows = list(range(k)) if rows is None else list(rows)
    if len(rows) < k and (hidden is None or heads is None):
        raise ValueError("peer_kl_directional: rows of some students need every student's "
                         "hidden states and heads")
    dtype = torch.promote_types(next(students[rows[0]].parameters()).dtype, torch.float32)
    total = torch.zeros(k, k, dtype=dtype, device=inputs[0].device)
    n_tokens = sum(x.numel() for x in inputs)
    mine = [students[i] for i in rows]
    params = [_params(s) for s in mine]
    if hidden is not None and heads is None:  # from hidden states: Students
        heads = [cast(Student, s).embed.weight.detach() for s in students]
    if hidden is not None and heads is not None and method == "exact":
        for n, x in enumerate(inputs):
            pairs = [(cast(Student, s).hidden_jvp(x, theta, v)[1].flatten(0, -2),
                      v["embed.weight"])
                     for s, theta, v in zip(mine, params, tangents, strict=True)]
            total += linear_peer_directional(hidden[n], heads, pairs, temperature,
                                             rows=rows).to(dtype)
        return total / n_tokens
    for n, x in enumerate(inputs):
        with torch.no_grad():
            if logits is not None:
                zs = logits[n]
            elif hidden is not None and heads is not None:
                zs = [h @ w.t() for h, w in zip(hidden[n], heads, strict=True)]
            else:
                zs = [s(x) for s in students]
            p = torch.stack([F.softmax(_scale(z.to(dtype).view(*x.shape, -1), temperature), -1)
                             for z in zs])
        for i, s, theta, v in zip(rows, mine, params, tangents, strict=True):
            def scaled(prm: Params, s=s, x=x) -> torch.Tensor:
                return _scale(functional_call(s, prm, (x,)).to(dtype), temperature)

            if method == "exact":
                # The JVP of z_i/T is the JVP of z_i divided by T: dividing the dots
                # afterwards spares two passes over [tokens, V] dual tensors.
                dz = _logits_jvp(s, x, theta, v)
                total[i] += _pair_dots(p, i, dz.to(dtype)) / temperature
            elif method == "fd":
                norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in v.values()))
                e = eps / max(norm, 1e-12)
                with torch.no_grad():
                    plus = {n: theta[n] + e * v[n] for n in theta}
                    minus = {n: theta[n] - e * v[n] for n in theta}
                    lp = F.log_softmax(scaled(plus), -1)
                    lm = F.log_softmax(scaled(minus), -1)
                # KL(p_j || p_i) differs between ± only through −Σ p_j log p_i
                total[i] += -(p * (lp - lm)).sum(-1).flatten(1).sum(1) / (2 * e)
            else:
                raise ValueError(f"unknown method {method!r}")
    return total / n_tokens


def _logits_jvp(model: torch.nn.Module, x: torch.Tensor, params: Params,
                tangents: Params) -> torch.Tensor:
    """d logits along ``tangents``: the model's own ``logits_jvp`` if it has one (a
    :class:`~minidml.model.Student` skips its head's primal matmul), else ``torch.func.jvp``."""
    if hasattr(model, "logits_jvp"):
        return cast(_LogitsJvp, model).logits_jvp(x, params, tangents)
    with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels have no forward-mode AD
        return jvp(lambda prm: functional_call(model, prm, (x,)), (params,), (tangents,))[1]


class _LogitsJvp(Protocol):
    """A model with its own :meth:`~minidml.model.Student.logits_jvp`."""

    def logits_jvp(self, ids: torch.Tensor, params: Params, tangents: Params
                   ) -> torch.Tensor: ...


def _scale(z: torch.Tensor, temperature: float) -> torch.Tensor:
    return z if temperature == 1 else z / temperature


def _pair_dots(p: torch.Tensor, i: int, dz: torch.Tensor) -> torch.Tensor:
    """[K] vector over j of Σ_tokens ⟨p_i − p_j, dz_i⟩, with dz_i the JVP of z_i / T."""
    dz = dz.reshape(-1, dz.shape[-1])
    p = p.reshape(p.shape[0], -1, p.shape[-1])
    dots = torch.einsum("knv,nv->k", p, dz)  # Σ_tokens ⟨p_j, dz_i⟩ for every j
    return dots[i] - dots


def _check(variant: str, objective: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown hypergradient variant {variant!r}; choose from {VARIANTS}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown outer objective {objective!r}; choose from {OBJECTIVES}")


def _outer_at_unrolled(students: Sequence[torch.nn.Module], unroll: Unroll,
                       omega: torch.Tensor, x_out: torch.Tensor, y_out: torch.Tensor,
                       objective: str, from_hidden: bool,
                       gather: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> tuple[list[Params], torch.Tensor, tuple]:
    r"""θ' of ``students`` (requiring gradients), L_out(θ', ω) and its gradients for ω and
    every θ'. ``from_hidden`` takes the held-out terms from hidden states in row chunks
    (:class:`~minidml.model.Student`\ s); ``gather`` completes this process's students'
    terms with the other students' (constants here)."""
    theta_new = [{n: t.requires_grad_() for n, t in prm.items()} for prm in unroll.step(students)]
    w = omega.detach().clone().requires_grad_()
    if from_hidden:  # Students
        lp = torch.stack([linear_target_log_probs(
            trunk_call(cast(Student, s), prm, x_out).flatten(0, -2), prm["embed.weight"],
            y_out.flatten()) for s, prm in zip(students, theta_new, strict=True)])
        terms = lp if objective == "ensemble" else -lp.mean(1).to(w.dtype)
    else:
        out_logits = [functional_call(s, prm, (x_out,)).flatten(0, -2)
                      for s, prm in zip(students, theta_new, strict=True)]
        terms = outer_terms(out_logits, y_out.flatten(), objective, w.dtype)
    if gather is not None:
        terms = gather(terms)
    loss = combine_outer(terms, w, objective)
    flat = [t for prm in theta_new for t in prm.values()]
    return theta_new, loss, torch.autograd.grad(loss, [w, *flat], allow_unused=True)


def _tangents(theta_new: list[Params], grads: Sequence[torch.Tensor | None]) -> list[Params]:
    """v_i = ∇_θi' L_out for each student, zeros where a parameter had no gradient."""
    it = iter(grads)
    return [{n: (g if g is not None else torch.zeros_like(t))
             for (n, t), g in zip(prm.items(), it, strict=False)} for prm in theta_new]


def _along_scale(tangents: list[Params], unroll: Unroll) -> list[Params]:
    """dθ'/dω = −scale ⊙ d∇L/dω: the directional derivatives go along v ⊙ scale."""
    return [{n: t * unroll.scale_of(i, n) for n, t in v.items()} for i, v in enumerate(tangents)]


def _second_order(omega: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Σ_i Σ_{j≠i} (∂ω̃_j^{(i)}/∂ω) · D_ij, [K]."""
    w2 = omega.detach().clone().requires_grad_()
    (second,) = torch.autograd.grad((peer_weights(w2) * d.to(w2.dtype)).sum(), [w2])
    return second


def hypergradient(students: Sequence[torch.nn.Module], omega: torch.Tensor,
                  inputs: Sequence[torch.Tensor], x_out: torch.Tensor, y_out: torch.Tensor, *,
                  lr: float, alpha: float, temperature: float, variant: str = "exact",
                  objective: str = "ensemble", eps: float = 1e-3,
                  logits: Sequence[Sequence[torch.Tensor]] | None = None,
                  hidden: Sequence[Sequence[torch.Tensor]] | None = None,
                  heads: Sequence[torch.Tensor] | None = None,
                  comm: Comm | None = None, unroll: Unroll | None = None) -> Hypergradient:
    r"""dL_out/dω through one unrolled inner step, in one process (see the module docstring).

    Reads the inner step's gradients from the students' ``.grad`` (call it after the inner
    backward pass and before the optimiser step); ``inputs`` are the training inputs that
    gradient was computed on, and ``logits`` optionally the students' (detached) logits on
    them; (x_out, y_out) is the held-out batch. Changes nothing.

    ``hidden`` (in place of ``logits``: the students' detached final hidden states
    [tokens, d_i] on each input, and optionally ``heads``, their head weights;
    :class:`~minidml.model.Student`\ s) takes the whole step from hidden states, as the inner
    loss does (:mod:`minidml.fused_linear`): the held-out log-probabilities and the peer-KL
    derivatives walk row chunks, and no K×N×V tensor is built. The result is the same.

    ``unroll`` (:func:`adam_unroll`, say) replaces the default unrolled step,
    :func:`sgd_unroll` at ``lr``. A ``comm`` of several ranks hands the work to
    :func:`distributed_hypergradient`.
    """
    if comm is not None and comm.world_size > 1:
        if hidden is None:
            raise ValueError("hypergradient: a distributed run takes it from hidden states")
        return distributed_hypergradient(comm, students, omega, inputs, x_out, y_out, hidden,
                                         heads, lr=lr, alpha=alpha, temperature=temperature,
                                         variant=variant, objective=objective, eps=eps,
                                         unroll=unroll)
    _check(variant, objective)
    unroll = unroll if unroll is not None else sgd_unroll(students, lr)
    theta_new, loss, grads = _outer_at_unrolled(students, unroll, omega, x_out, y_out,
                                                objective, hidden is not None)
    direct = grads[0]
    if variant == "first-order" or alpha == 0 or len(students) == 1:
        return Hypergradient(direct, direct, loss.detach())
    tangents = _along_scale(_tangents(theta_new, grads[1:]), unroll)
    d = peer_kl_directional(students, tangents, inputs, temperature, variant, eps, logits,
                            hidden=hidden, heads=heads)
    grad = direct - alpha * temperature**2 * _second_order(omega, d)
    return Hypergradient(grad, direct, loss.detach())


def distributed_hypergradient(comm: Comm, students: Sequence[torch.nn.Module],
                              omega: torch.Tensor, inputs: Sequence[torch.Tensor],
                              x_out: torch.Tensor, y_out: torch.Tensor,
                              hidden: Sequence[Sequence[torch.Tensor]],
                              heads: Sequence[torch.Tensor] | None = None, *, lr: float,
                              alpha: float, temperature: float, variant: str = "exact",
                              objective: str = "ensemble", eps: float = 1e-3,
                              unroll: Unroll | None = None) -> Hypergradient:
    r""":func:`hypergradient` on one rank of a job (a :class:`~minidml.distributed.Comm`):
    the rank differentiates through its own students only, ``inputs`` and the held-out batch
    being its share, and ``hidden`` every student's detached hidden states on each input,
    ``heads`` every student's head weights (as the inner loss gathered them). The students'
    held-out terms are gathered, the held-out gradients averaged over data-parallel replicas,
    and the per-rank parts of dL_out/dω summed in one all-reduce, so every rank returns the
    same result. ``unroll`` is of this rank's students."""
    _check(variant, objective)
    rows = list(comm.local)
    mine = [students[i] for i in rows]
    unroll = unroll if unroll is not None else sgd_unroll(mine, lr)
    gather = (lambda t: torch.stack(comm.gather_students(list(t)))) if comm.peers > 1 else None
    theta_new, loss, grads = _outer_at_unrolled(mine, unroll, omega, x_out, y_out, objective,
                                                True, gather)
    direct = grads[0]
    if variant == "first-order" or alpha == 0 or len(students) == 1:
        grad, direct, loss = comm.sum_hypergradient(direct, torch.zeros_like(direct), loss)
        return Hypergradient(grad, direct, loss.detach())
    tangents = _tangents(theta_new, grads[1:])
    comm.average([t for v in tangents for t in v.values()], "held-out gradients")
    heads = (heads if heads is not None  # from hidden states: Students
             else [cast(Student, s).embed.weight.detach() for s in students])
    d = peer_kl_directional(students, _along_scale(tangents, unroll), inputs, temperature,
                            variant, eps, rows=rows, hidden=hidden, heads=heads)
    # D's rows are this rank's students, averaged over its share of the tokens: the job's
    # second-order term is the sum over peer ranks of the mean over replicas
    grad, direct, loss = comm.sum_hypergradient(
        direct, alpha * temperature**2 * _second_order(omega, d), loss)
    return Hypergradient(grad, direct, loss.detach())


def hypergradient_nested(students: Sequence[torch.nn.Module], omega: torch.Tensor,
                         x: torch.Tensor, y: torch.Tensor, x_out: torch.Tensor,
                         y_out: torch.Tensor, *, lr: float, alpha: float, temperature: float,
                         objective: str = "ensemble", inner_loss: Callable | None = None,
                         unroll: Unroll | None = None) -> torch.Tensor:
    """The plain reference: dL_out/dω by nested ``torch.func.grad`` through the inner loss
    (the plain :func:`~minidml.losses.mutual_loss`, or ``inner_loss``), and the
    unrolled step θ' = base − scale ⊙ g (default: :func:`sgd_unroll` at ``lr``)."""
    params = [_params(s) for s in students]
    unroll = unroll if unroll is not None else sgd_unroll(students, lr)

    def inner(prms: list[Params], w: torch.Tensor) -> torch.Tensor:
        logits = [functional_call(s, p, (x,)).flatten(0, -2)
                  for s, p in zip(students, prms, strict=True)]
        return mutual_loss(logits, y.flatten(), w, alpha, temperature).total

    def outer(w: torch.Tensor) -> torch.Tensor:
        g = torch.func.grad(inner_loss or inner)(params, w)
        new = [{n: unroll.base[i][n] - unroll.scale_of(i, n) * gp[n] for n in p}
               for i, (p, gp) in enumerate(zip(params, g, strict=True))]
        logits = [functional_call(s, p, (x_out,)).flatten(0, -2)
                  for s, p in zip(students, new, strict=True)]
        return outer_loss(logits, y_out.flatten(), w, objective)

    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.grad(outer)(omega.detach())
