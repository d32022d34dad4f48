"""A small GPT-style student with Llama conventions.

Pre-norm RMSNorm, rotary position embeddings (the "rotate half" layout that Hugging Face's
Llama uses), causal ``scaled_dot_product_attention``, a SwiGLU MLP, no biases, and input and
output embeddings tied. :meth:`Student.trunk` gives the final hidden states and
:meth:`Student.head` the logits, so a loss can work from hidden states in chunks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from .errors import MinidmlError


@dataclass(frozen=True)
class Shape:
    """What makes students differ: depth, width, heads and MLP ratio (no vocabulary or context)."""

    n_layers: int
    d_model: int
    n_heads: int
    mlp_ratio: float = 8 / 3

    def __str__(self) -> str:
        return (f"{self.n_layers} layers × {self.d_model} wide, {self.n_heads} heads, "
                f"MLP ×{self.mlp_ratio:.3g}")


@dataclass(frozen=True)
class StudentConfig:
    """The shape of one student. ``n_params`` is exact, so a search need not build models."""

    vocab_size: int = 16384
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    mlp_ratio: float = 8 / 3
    context: int = 256
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layers", "d_model", "n_heads", "context"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MinidmlError(f"student {name}={value!r}: must be a "
                                   "positive integer")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise MinidmlError(
                f"student d_model={self.d_model}, n_heads={self.n_heads}: the head size "
                "d_model/n_heads must be an even integer; change --width or --heads")
        if not (self.mlp_ratio > 0 and math.isfinite(self.mlp_ratio)):
            raise MinidmlError(f"student mlp_ratio={self.mlp_ratio}: must be a positive number")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """SwiGLU hidden size: ``mlp_ratio · d_model`` rounded up to a multiple of 32."""
        return 32 * math.ceil(self.mlp_ratio * self.d_model / 32)

    @property
    def n_params(self) -> int:
        """Exactly ``sum(p.numel() for p in Student(self).parameters())``."""
        d, f = self.d_model, self.ffn_dim
        per_layer = 4 * d * d + 3 * d * f + 2 * d  # attention, SwiGLU, two norms
        return self.vocab_size * d + self.n_layers * per_layer + d  # tied embedding, final norm

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6·(matmul params) + attention."""
        t = seq_len or self.context
        matmul_params = self.n_params - self.n_layers * 2 * self.d_model - self.d_model
        return 6.0 * matmul_params + 6.0 * self.n_layers * self.d_model * t  # causal: half of 12

    @property
    def shape(self) -> Shape:
        return Shape(self.n_layers, self.d_model, self.n_heads, self.mlp_ratio)

    @classmethod
    def from_shape(cls, shape: Shape, vocab_size: int, context: int) -> StudentConfig:
        return cls(vocab_size=vocab_size, context=context, **dataclasses.asdict(shape))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(head_dim: int, context: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [context, head_dim] in the rotate-half layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


KeyValues = tuple[torch.Tensor, torch.Tensor]  # one layer's keys and values [B, H, T, head_dim]


class Attention(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                past: KeyValues | None = None, mask: torch.Tensor | None = None,
                keep: list[KeyValues] | None = None) -> torch.Tensor:
        """Causal self-attention of ``x`` [B, T, d]; with ``past``, after the keys and values
        [B, H, P, head_dim] of earlier positions, ``mask`` [B, 1, T, P + T] saying which keys
        each position sees (:meth:`Student.trunk_after`). ``keep`` collects this call's keys
        (rotated) and values."""
        b, t, d = x.shape
        q = apply_rope(self._heads(self.q_proj(x)), cos, sin)
        k, v = self.keys_values(x, cos, sin)
        if keep is not None:
            keep.append((k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # the CPU's fused attention runs its backward 2-4x slower in bf16 than in float32
            # (head sizes 32-64, 128 positions), and its matmuls are a small share of FLOPs
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                   attn_mask=mask,
                                                   is_causal=mask is None).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))

    def keys_values(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> KeyValues:
        """The keys (rotated) and values [B, H, T, head_dim] of ``x`` [B, T, d]."""
        return apply_rope(self._heads(self.k_proj(x)), cos, sin), self._heads(self.v_proj(x))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d] as [B, H, T, head_dim]."""
        return x.view(*x.shape[:2], self.n_heads, -1).transpose(1, 2)


class SwiGLU(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                past: KeyValues | None = None, mask: torch.Tensor | None = None,
                keep: list[KeyValues] | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, past, mask, keep)
        return x + self.mlp(self.mlp_norm(x))


class Student(nn.Module):
    """A decoder-only language model: ``logits = head(trunk(ids))``."""

    rope_cos: torch.Tensor  # buffers (register_buffer), the rotary tables [context, head_dim]
    rope_sin: torch.Tensor

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        cos, sin = rope_tables(config.head_dim, config.context, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/√(2L)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            else:
                std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def _rope(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables of positions 0 … t − 1."""
        if t <= self.config.context:
            return self.rope_cos[:t], self.rope_sin[:t]
        # positions beyond those trained on, as the exported Llama computes them
        c = self.config
        cos, sin = rope_tables(c.head_dim, t, c.rope_theta)
        return cos.to(self.rope_cos), sin.to(self.rope_sin)

    def trunk(self, ids: torch.Tensor, keep: list[KeyValues] | None = None) -> torch.Tensor:
        """Final (normalised) hidden states [B, T, d_model] of token ids [B, T]; ``keep``
        collects every layer's keys (rotated) and values."""
        cos, sin = self._rope(ids.shape[-1])
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, keep=keep)
        return self.norm(x)

    def prefix_cache(self, ids: torch.Tensor) -> list[KeyValues]:
        """Every layer's keys (rotated) and values [B, H, T, head_dim] of token ids [B, T]:
        the prefixes that :meth:`trunk_after` continues. Rows may be right-padded; what
        follows a row's own tokens is never seen by them."""
        cos, sin = self._rope(ids.shape[-1])
        cache: list[KeyValues] = []
        x = self.embed(ids)
        for layer in self.layers[:-1]:
            x = layer(x, cos, sin, keep=cache)
        last = cast(Block, self.layers[-1])  # only its keys and values: its output is never used
        cache.append(last.attn.keys_values(last.attn_norm(x), cos, sin))
        return cache

    def trunk_after(self, ids: torch.Tensor, cache: list[KeyValues], start: torch.Tensor,
                    keep: list[KeyValues] | None = None) -> torch.Tensor:
        """:meth:`trunk` of the tokens ``ids`` [B, T] that follow, in row b, the first
        ``start[b]`` positions of ``cache`` (:meth:`prefix_cache`, one row per row of
        ``ids``): hidden states [B, T, d_model] equal to those of the whole text's, at its
        positions ``start[b]`` onwards. A prefix shared by several texts is so run once.
        ``keep`` collects every layer's keys and values of ``ids``."""
        b, t = ids.shape
        width = cache[0][0].shape[2]
        at = start[:, None] + torch.arange(t, device=ids.device)  # [B, T] positions
        cos, sin = self._rope(width + t)
        cos, sin = cos[at][:, None], sin[at][:, None]  # [B, 1, T, head_dim]
        seen = torch.arange(width, device=ids.device)[None, :] < start[:, None]  # [B, P]
        causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
        mask = torch.cat([seen[:, None, :].expand(b, t, width), causal.expand(b, t, t)], -1)
        x = self.embed(ids)
        for layer, past in zip(self.layers, cache, strict=True):
            x = layer(x, cos, sin, past, mask[:, None], keep)
        return self.norm(x)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary; the output matrix is the input embedding (tied)."""
        return F.linear(hidden, self.embed.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(ids))

    def hidden_jvp(self, ids: torch.Tensor, params: dict[str, torch.Tensor],
                   tangents: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The final hidden states [B, T, d_model] at ``params`` and their forward-mode
        derivative along ``tangents`` (``torch.func.jvp`` through the trunk)."""
        with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels have no forward-mode AD
            # without has_aux, jvp gives (primal, tangent)
            return cast("tuple[torch.Tensor, torch.Tensor]",
                        jvp(lambda p: trunk_call(self, p, ids), (params,), (tangents,)))

    def logits_jvp(self, ids: torch.Tensor, params: dict[str, torch.Tensor],
                   tangents: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward-mode derivative of the logits [B, T, V] at ``params`` along ``tangents``.

        ``torch.func.jvp`` runs through the trunk only; the tied head's product rule,
        dz = dh·Wᵀ + h·dWᵀ, is then one matmul of [h', h] with [W, dW]. The head's primal
        product, the largest matmul of a small model, is never computed.
        """
        h, dh = self.hidden_jvp(ids, params, tangents)
        w, dw = params["embed.weight"], tangents["embed.weight"]
        return F.linear(torch.cat([dh, h], -1), torch.cat([w, dw], -1))

    def next_token_logits(self, ids: torch.Tensor, cache: list[KeyValues] | None = None
                          ) -> tuple[torch.Tensor, list[KeyValues] | None]:
        """Logits [B, V] of the token after ``ids`` [B, T], and every layer's keys and values
        of the positions read so far, for the next call: given that ``cache``, ``ids`` are
        only the tokens that follow it (at the same position in every row), so each token
        runs once. The positions read together must stay within ``config.context``
        (:meth:`generate` starts afresh on its last ``context`` tokens when they do not). A
        model that returns no cache is given the whole window at every step."""
        keep: list[KeyValues] = []
        if cache is None:
            hidden = self.trunk(ids, keep)
        else:
            start = torch.full(ids.shape[:1], cache[0][0].shape[2], device=ids.device)
            hidden = self.trunk_after(ids, cache, start, keep)
            keep = [(torch.cat([pk, k], 2), torch.cat([pv, v], 2))
                    for (pk, pv), (k, v) in zip(cache, keep, strict=True)]
        return self.head(hidden[:, -1]), keep

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, eos_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue each row of ``ids`` [B, T] by sampling; ``temperature=0`` is greedy.

        Each token is predicted from the last ``config.context`` tokens, as :meth:`forward`
        of them predicts it: while the text fits the context, from the keys and values of
        the tokens before (:meth:`next_token_logits`), each new token run once; past it, the
        window slides and is run whole. Rows that produce ``eos_id`` stop growing (they are
        padded with it).
        """
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        cache = None
        for _ in range(max_new_tokens):
            if cache is not None and ids.shape[1] <= self.config.context:
                logits, cache = self.next_token_logits(ids[:, -1:], cache)
            else:
                logits, cache = self.next_token_logits(ids[:, -self.config.context:])
            logits = logits.float()
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            if eos_id is not None:
                nxt = torch.where(done[:, None], torch.full_like(nxt, eos_id), nxt)
                done |= nxt[:, 0] == eos_id
            ids = torch.cat([ids, nxt], dim=1)
            if eos_id is not None and bool(done.all()):
                break
        return ids


class _TrunkView(nn.Module):
    """A student seen through :meth:`Student.trunk`, for ``functional_call``."""

    def __init__(self, student: Student):
        super().__init__()
        self.student = student

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.student.trunk(ids)


def trunk_call(student: Student, params: dict[str, torch.Tensor],
               ids: torch.Tensor) -> torch.Tensor:
    """:meth:`Student.trunk` of ``ids`` with the parameters ``params`` (name → tensor, as
    ``named_parameters``) in place of the student's own: ``functional_call`` for the trunk."""
    return functional_call(_TrunkView(student), {f"student.{n}": t for n, t in params.items()},
                           (ids,))
