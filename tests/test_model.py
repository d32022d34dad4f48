"""The student model: exact parameter count, causality, tied embeddings, RoPE and generation."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minidml.errors import MinidmlError
from minidml.model import Shape, Student, StudentConfig, apply_rope, rope_tables

TINY = StudentConfig(vocab_size=50, n_layers=2, d_model=32, n_heads=4, mlp_ratio=2.0, context=16)


def perturbed(cfg: StudentConfig = TINY, seed: int = 0) -> Student:
    """A student whose every parameter (norm gains too) is random and of order one."""
    torch.manual_seed(seed)
    model = Student(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.3 if p.dim() == 1 else 0.1))
    return model.eval()


def random_config(rng: random.Random) -> StudentConfig:
    heads = rng.randint(1, 4)
    return StudentConfig(vocab_size=rng.randint(1, 300), n_layers=rng.randint(1, 3),
                         d_model=heads * 2 * rng.randint(1, 6), n_heads=heads,
                         mlp_ratio=rng.uniform(0.2, 5.0), context=rng.randint(1, 64),
                         rope_theta=rng.choice([100.0, 10_000.0, 500_000.0]))


# ----------------------------------------------------------------------------- configuration
def test_n_params_is_exact_for_many_configs():
    rng = random.Random(0)
    for _ in range(60):
        cfg = random_config(rng)
        model = Student(cfg)
        assert cfg.n_params == sum(p.numel() for p in model.parameters()), cfg


def test_flops_per_token_counts_matmul_parameters():
    rng = random.Random(1)
    for _ in range(10):
        cfg = random_config(rng)
        matmul = sum(p.numel() for p in Student(cfg).parameters() if p.dim() >= 2)
        for t in (None, 7):
            seq = cfg.context if t is None else t
            expected = 6 * matmul + 6 * cfg.n_layers * cfg.d_model * seq
            assert cfg.flops_per_token(t) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(d=st.integers(1, 2048), ratio=st.floats(0.01, 16.0))
def test_ffn_dim_is_the_ratio_rounded_up_to_32(d, ratio):
    cfg = StudentConfig(vocab_size=10, n_layers=1, d_model=2 * d, n_heads=1, mlp_ratio=ratio)
    assert cfg.ffn_dim % 32 == 0
    assert ratio * 2 * d <= cfg.ffn_dim < ratio * 2 * d + 32 + 1e-9


def test_shape_round_trip():
    cfg = StudentConfig(vocab_size=77, n_layers=3, d_model=48, n_heads=6, mlp_ratio=3.5,
                        context=40)
    assert cfg.shape == Shape(3, 48, 6, 3.5)
    assert StudentConfig.from_shape(cfg.shape, vocab_size=77, context=40) == cfg
    assert cfg.head_dim == 8


@pytest.mark.parametrize("changes, match", [
    ({"d_model": 64, "n_heads": 3}, "even integer"),  # heads do not divide the width
    ({"d_model": 6, "n_heads": 2}, "even integer"),  # odd head size
    ({"d_model": 12, "n_heads": 12}, "even integer"),  # head size 1
    ({"n_layers": 0}, "n_layers"),
    ({"vocab_size": -5}, "vocab_size"),
    ({"context": 0}, "context"),
    ({"n_heads": 0}, "n_heads"),
    ({"d_model": 64.0}, "d_model"),
    ({"n_layers": True}, "n_layers"),
    ({"mlp_ratio": 0.0}, "mlp_ratio"),
    ({"mlp_ratio": -1.0}, "mlp_ratio"),
    ({"mlp_ratio": float("nan")}, "mlp_ratio"),
    ({"mlp_ratio": float("inf")}, "mlp_ratio"),
])
def test_invalid_configs_are_refused(changes, match):
    with pytest.raises(MinidmlError, match=match):
        dataclasses.replace(TINY, **changes)


# ----------------------------------------------------------------------------- forward
def reference_logits(model: Student, ids: torch.Tensor) -> torch.Tensor:
    """The model written out by hand in float64: RMSNorm, rotate-half RoPE, causal softmax
    attention, SwiGLU, tied output matrix."""
    cfg = model.config
    w = {k: v.detach().double() for k, v in model.state_dict().items()}
    b, t = ids.shape
    h, hd = cfg.n_heads, cfg.head_dim

    def rms(x, g):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps) * g

    half = hd // 2
    freq = cfg.rope_theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * freq  # [T, half]

    def rope(v):
        a, c = v[..., :half], v[..., half:]
        return torch.cat([a * ang.cos() - c * ang.sin(), c * ang.cos() + a * ang.sin()], -1)

    mask = torch.ones(t, t, dtype=torch.bool).tril()
    x = w["embed.weight"][ids]
    for layer in range(cfg.n_layers):
        p = f"layers.{layer}."
        y = rms(x, w[p + "attn_norm.weight"])
        q, k, v = (
            (y @ w[p + f"attn.{n}_proj.weight"].T).view(b, t, h, hd).transpose(1, 2)
            for n in "qkv")
        q, k = rope(q), rope(k)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + att.transpose(1, 2).reshape(b, t, -1) @ w[p + "attn.o_proj.weight"].T
        y = rms(x, w[p + "mlp_norm.weight"])
        gate = y @ w[p + "mlp.gate_proj.weight"].T
        up = y @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["norm.weight"]) @ w["embed.weight"].T


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_matches_a_plain_reference(seed):
    cfg = dataclasses.replace(TINY, rope_theta=100.0) if seed else TINY
    model = perturbed(cfg, seed)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (3, cfg.context), generator=gen)
    got = model(ids).double()
    ref = reference_logits(model, ids)
    assert got.shape == (3, cfg.context, cfg.vocab_size)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    # shorter sequences use the first rows of the rotary tables
    assert torch.allclose(model(ids[:, :5]).double(), reference_logits(model, ids[:, :5]),
                          rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_model_is_causal():
    model = perturbed()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, TINY.vocab_size, (2, TINY.context), generator=gen)
    base = model(ids)
    for t in (0, 1, 7, TINY.context - 1):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1 + torch.randint(0, TINY.vocab_size - 1, (2,),
                                                           generator=gen)) % TINY.vocab_size
        out = model(changed)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6, rtol=0), t
        assert not torch.allclose(out[:, t], base[:, t], atol=1e-4), t  # the token itself matters


def test_trunk_and_head_compose_to_forward():
    model = perturbed()
    ids = torch.randint(0, TINY.vocab_size, (2, 9))
    hidden = model.trunk(ids)
    assert hidden.shape == (2, 9, TINY.d_model)
    assert torch.equal(model.head(hidden), model(ids))


def test_logits_jvp_equals_forward_mode_autodiff_through_forward():
    """The trunk-only JVP plus the tied head's product rule, against torch.func.jvp of the
    whole model, in float64 (the tangent of the tied matrix enters both ends)."""
    from torch.func import functional_call, jvp
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = perturbed().double()
    ids = torch.randint(0, TINY.vocab_size, (2, 9))
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = {n: torch.randn_like(p) for n, p in params.items()}
    with sdpa_kernel(SDPBackend.MATH):
        _, want = jvp(lambda p: functional_call(model, p, (ids,)), (params,), (tangents,))
    got = model.logits_jvp(ids, params, tangents)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    only_embed = {n: t if n == "embed.weight" else torch.zeros_like(t)
                  for n, t in tangents.items()}
    assert model.logits_jvp(ids, params, only_embed).abs().max() > 1e-3


def test_embeddings_are_tied():
    model = perturbed()
    shape = (TINY.vocab_size, TINY.d_model)
    matrices = [n for n, p in model.named_parameters() if p.shape == shape]
    assert matrices == ["embed.weight"]  # no separate output matrix
    hidden = torch.randn(4, TINY.d_model)
    assert torch.allclose(model.head(hidden), hidden @ model.embed.weight.T, atol=1e-6)
    other = torch.randn_like(model.embed.weight)
    with torch.no_grad():
        model.embed.weight.copy_(other)
    assert torch.allclose(model.head(hidden), hidden @ other.T, atol=1e-6)
    # the output loss reaches the embedding through the head too
    model.zero_grad()
    model.head(hidden).sum().backward()
    assert torch.allclose(model.embed.weight.grad, hidden.sum(0).expand_as(other), atol=1e-5)


def test_sequence_longer_than_context_runs_as_a_longer_context_would():
    """Positions past the context get the same rotary angles as a student trained with a
    longer context (what the exported Llama computes), and leave earlier positions alone."""
    torch.manual_seed(0)
    short = Student(TINY)
    longer = Student(dataclasses.replace(TINY, context=2 * TINY.context + 3))
    longer.load_state_dict(short.state_dict())
    ids = torch.randint(0, TINY.vocab_size, (2, 2 * TINY.context + 3))
    with torch.no_grad():
        got, want = short(ids), longer(ids)
        first = short(ids[:, :TINY.context])
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got[:, :TINY.context], first, atol=1e-5)


@pytest.mark.parametrize("precision", [torch.float64, torch.float32])
def test_a_cached_prefix_continues_as_the_whole_text_would(precision):
    """trunk_after, from the keys and values of right-padded prefixes of several lengths
    (shared by several rows, one reaching past the context), gives each row's hidden states
    as the whole text's, value for value."""
    model = perturbed().to(precision).eval()
    torch.manual_seed(1)
    prefixes = [torch.randint(0, 50, (n,)) for n in (3, 9, 2 * TINY.context)]
    rows = [(0, 4), (0, 1), (1, 6), (2, 5), (2, 2), (1, 3)]  # (its prefix, own tokens)
    own = [torch.randint(0, 50, (n,)) for _, n in rows]
    padded = torch.zeros(3, max(len(p) for p in prefixes), dtype=torch.long)
    for g, p in enumerate(prefixes):
        padded[g, :len(p)] = p
    x = torch.full((len(rows), max(n for _, n in rows)), 7, dtype=torch.long)
    for r, t in enumerate(own):
        x[r, :len(t)] = t
    of = torch.tensor([g for g, _ in rows])
    with torch.no_grad():
        cache = [(k[of], v[of]) for k, v in model.prefix_cache(padded)]
        got = model.trunk_after(x, cache, torch.tensor([len(prefixes[g]) for g, _ in rows]))
        for r, (g, n) in enumerate(rows):
            whole = model.trunk(torch.cat([prefixes[g], own[r]])[None])[0, len(prefixes[g]):]
            tol = 1e-12 if precision == torch.float64 else 1e-5
            torch.testing.assert_close(got[r, :n], whole, rtol=0, atol=tol)


def test_initialisation():
    cfg = StudentConfig(vocab_size=512, n_layers=2, d_model=256, n_heads=4, context=8)
    torch.manual_seed(0)
    model = Student(cfg)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            residual = name.endswith(("o_proj.weight", "down_proj.weight"))
            std = 0.02 / math.sqrt(2 * cfg.n_layers) if residual else 0.02
            assert p.std().item() == pytest.approx(std, rel=0.05), name
            assert abs(p.mean().item()) < 0.1 * std, name


# ----------------------------------------------------------------------------- RoPE
def test_rope_is_a_rotation_of_pairs_i_and_i_plus_half():
    head_dim, context, theta = 8, 12, 50.0
    cos, sin = rope_tables(head_dim, context, theta)
    x = torch.randn(context, head_dim, dtype=torch.float64)
    got = apply_rope(x.float(), cos, sin).double()
    half = head_dim // 2
    for pos in range(context):
        for i in range(half):
            angle = pos * theta ** (-2 * i / head_dim)
            z = complex(x[pos, i], x[pos, i + half]) * complex(math.cos(angle), math.sin(angle))
            assert got[pos, i].item() == pytest.approx(z.real, abs=1e-5)
            assert got[pos, i + half].item() == pytest.approx(z.imag, abs=1e-5)
    assert torch.allclose(got[0], x[0], atol=1e-6)  # position 0 is not rotated


@settings(max_examples=30, deadline=None)
@given(m=st.integers(0, 40), n=st.integers(0, 40), shift=st.integers(0, 23),
       seed=st.integers(0, 1000))
def test_rope_scores_depend_only_on_the_offset(m, n, shift, seed):
    head_dim = 16
    cos, sin = rope_tables(head_dim, 64, 10_000.0)
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, head_dim, generator=gen)

    def score(a, b):
        return (apply_rope(q, cos[a], sin[a]) @ apply_rope(k, cos[b], sin[b])).item()

    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-4)
    assert apply_rope(q, cos[m], sin[m]).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


# ----------------------------------------------------------------------------- generation
def greedy_reference(model: Student, ids: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids[:, -model.config.context:])[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def test_greedy_generation():
    model = perturbed()
    prompt = torch.randint(0, TINY.vocab_size, (3, 4))
    out = model.generate(prompt, 8, temperature=0)
    assert out.shape == (3, 12) and torch.equal(out[:, :4], prompt)
    assert torch.equal(out, greedy_reference(model, prompt, 8))
    assert torch.equal(model.generate(prompt, 8, temperature=0), out)
    # top_k=1 is greedy whatever the temperature and the random state
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        assert torch.equal(model.generate(prompt, 8, temperature=1.5, top_k=1, generator=gen), out)


def test_generation_crops_to_the_context():
    model = perturbed()
    prompt = torch.randint(0, TINY.vocab_size, (2, TINY.context + 5))
    out = model.generate(prompt, 6, temperature=0)
    assert torch.equal(out, greedy_reference(model, prompt, 6))


def test_sampling_is_seeded_and_top_k_restricts_it():
    model = perturbed()
    prompt = torch.randint(0, TINY.vocab_size, (4, 3))

    def sample(seed, **kw):
        return model.generate(prompt, 10, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(5), sample(5))
    assert not torch.equal(sample(5), sample(6))
    k = 3
    out = sample(7, top_k=k, temperature=2.0)
    with torch.no_grad():
        for t in range(3, out.shape[1]):
            top = model(out[:, :t])[:, -1].topk(k, dim=-1).indices
            assert (top == out[:, t:t + 1]).any(-1).all(), t


def test_next_token_logits_continue_their_cache():
    """From its cache, a student's next-token logits are those of the whole text, values and
    gradients, in float64: a prompt, then several tokens at once, then one at a time, for a
    batch of rows."""
    model = perturbed().double()
    ids = torch.randint(0, TINY.vocab_size, (3, TINY.context))
    whole = model(ids)
    logits, cache = model.next_token_logits(ids[:, :5])
    torch.testing.assert_close(logits, whole[:, 4])
    logits, cache = model.next_token_logits(ids[:, 5:9], cache)
    torch.testing.assert_close(logits, whole[:, 8])
    for t in range(9, TINY.context):
        logits, cache = model.next_token_logits(ids[:, t:t + 1], cache)
        torch.testing.assert_close(logits, whole[:, t])
    assert len(cache) == TINY.n_layers
    assert cache[0][0].shape == (3, TINY.n_heads, TINY.context, TINY.head_dim)
    weights = torch.randn_like(logits)
    params = list(model.parameters())
    cached = torch.autograd.grad((logits * weights).sum(), params)
    direct = torch.autograd.grad((whole[:, -1] * weights).sum(), params)
    for a, b in zip(cached, direct, strict=True):
        torch.testing.assert_close(a, b)


def test_generation_runs_each_token_once_within_the_context():
    """Within the context, generation feeds the embedding the prompt once and then one new
    token per step; past it, the whole window of ``context`` tokens per step."""
    model = perturbed()
    widths = []
    model.embed.register_forward_hook(lambda _m, args, _out: widths.append(args[0].shape[1]))
    prompt = torch.randint(0, TINY.vocab_size, (2, TINY.context - 3))
    out = model.generate(prompt, 6, temperature=0)
    assert widths == [TINY.context - 3, 1, 1, 1, TINY.context, TINY.context]
    assert torch.equal(out, greedy_reference(model, prompt, 6))  # across the context's end


class Counter(Student):
    """A fake student that always predicts ``last token + 1`` (mod the vocabulary), and keeps
    no cache (so it is given the whole window each step)."""

    def next_token_logits(self, ids, cache=None):
        nxt = (ids[:, -1] + 1) % self.config.vocab_size
        return F.one_hot(nxt, self.config.vocab_size).float() * 10, None


def test_eos_stops_rows_and_pads_them():
    model = Counter(TINY)
    eos = 8
    out = model.generate(torch.tensor([[5], [0]]), 6, temperature=0, eos_id=eos)
    assert out.tolist() == [[5, 6, 7, 8, 8, 8, 8], [0, 1, 2, 3, 4, 5, 6]]
    # sampling too: a finished row only ever gets eos
    out = model.generate(torch.tensor([[6], [1]]), 9, temperature=0.01, eos_id=eos,
                         generator=torch.Generator().manual_seed(0))
    assert out.tolist() == [[6, 7, 8, 8, 8, 8, 8, 8], [1, 2, 3, 4, 5, 6, 7, 8]]  # stops at 7


def test_generation_stops_early_when_every_row_is_done():
    model = Counter(TINY)
    out = model.generate(torch.tensor([[6], [7]]), 50, temperature=0, eos_id=8)
    assert out.tolist() == [[6, 7, 8], [7, 8, 8]]
    out = model.generate(torch.tensor([[6], [7]]), 50, temperature=0)  # no eos: all 50 steps
    assert out.shape == (2, 51)


def test_cpu_bf16_autocast_runs_attention_in_float32(monkeypatch):
    """Under bf16 autocast on the CPU the attention core takes float32 operands (its bf16
    backward is slow there); the trunk still returns what autocast gives and stays close to
    float32, with gradients for every parameter."""
    torch.manual_seed(0)
    model = Student(StudentConfig(vocab_size=97, n_layers=2, d_model=64, n_heads=2, context=32))
    ids = torch.randint(0, 97, (3, 32))
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(q.dtype)
        return real(q, k, v, **kw)

    want = model.trunk(ids)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.trunk(ids)
    assert seen == [torch.float32, torch.float32]
    assert float((got.detach().float() - want.detach()).norm() / want.detach().norm()) < 3e-2
    got.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
