"""Any Hugging Face causal language model, scored by minidml's suites (``minidml eval
hf/model``; needs the ``hf`` extra).

A suite sees a model through what a minidml student offers (see :mod:`minidml.evaluation.scoring`):
``model(ids)`` gives next-token logits [B, T, V], ``model.trunk(ids)`` the final hidden
states [B, T, d] (GLUE's classifier reads the last non-pad token's), and ``model.config``
its ``context``, ``d_model``, ``vocab_size``, ``n_params`` and ``shape``; the tokenizer
gives ``encode_batch`` (no special tokens), ``encode_with_spans`` (special tokens and
character offsets, for the BabyLM 2026 rule) and the ids ``bos_id`` (the prefix a text is
scored after under lm-eval's rule), ``eos_id`` and ``pad_id``. :class:`HFModel` and
:class:`HFTokenizer` offer that for a ``transformers`` model, so the protocols
(:mod:`minidml.evaluation.protocols`) apply to it as to a student. The prefix is the
tokenizer's BOS, or its end-of-text token where it has no BOS (GPT-2), as lm-evaluation-harness
chooses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import MinidmlError, describe
from ..runtime import resolve_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel

EXTRA_LINE = "pip install 'minidml[hf]'"


def is_hf_model_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a Hugging Face model directory (not a minidml run)."""
    meta = _config(Path(path))
    return meta is not None and "minidml_version" not in meta and (
        "architectures" in meta or "model_type" in meta)


def _config(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


@dataclass(frozen=True)
class HFModelConfig:
    """What minidml reads of a model's configuration."""

    architecture: str
    context: int
    d_model: int
    vocab_size: int
    n_params: int

    @property
    def shape(self) -> str:
        return self.architecture


class HFModel(nn.Module):
    """A ``transformers`` causal LM with a student's interface (logits, ``trunk``)."""

    def __init__(self, model: PreTrainedModel, architecture: str):
        super().__init__()
        self.model = model
        c = model.config
        context = next((getattr(c, k) for k in ("max_position_embeddings", "n_positions",
                                                "n_ctx") if getattr(c, k, None)), 2048)
        head = model.get_output_embeddings().weight  # [vocabulary, the width trunk() gives]
        # (not the config's hidden size: OPT's last states are projected to a narrower width)
        self.config = HFModelConfig(architecture, int(context), int(head.shape[1]),
                                    int(head.shape[0]), sum(p.numel() for p in model.parameters()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits

    def trunk(self, ids: torch.Tensor) -> torch.Tensor:
        """The final hidden states (after the last norm, as the head reads them)."""
        out = self.model(input_ids=ids, use_cache=False, output_hidden_states=True)
        return out.hidden_states[-1]


class HFTokenizer:
    """A ``transformers`` tokenizer with the part of :class:`minidml.Tokenizer` that scoring
    and GLUE use."""

    def __init__(self, tokenizer: Any):
        self.hf = tokenizer
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None \
            else tokenizer.eos_token_id
        if prefix is None:
            raise MinidmlError(f"{tokenizer.name_or_path}: the tokenizer has neither a BOS "
                               "nor an end-of-text token to score texts after")
        self.bos_id = int(prefix)
        self.eos_id = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None
                          else prefix)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else self.eos_id)
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.hf(list(texts), add_special_tokens=False)["input_ids"]]

    def encode_with_spans(self, texts: Sequence[str]
                          ) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Ids with the tokenizer's own special tokens and each token's character span, as
        the BabyLM 2026 pipeline reads them (a fast tokenizer's offsets)."""
        if not texts:
            return []
        if not getattr(self.hf, "is_fast", False):
            raise MinidmlError(f"{self.hf.name_or_path}: the BabyLM 2026 rule needs a fast "
                               "tokenizer's character offsets; give a model with a "
                               "tokenizer.json, or pass --protocol lm-eval")
        enc = self.hf(list(texts), return_offsets_mapping=True)
        return [(list(ids), [(int(a), int(b)) for a, b in spans])
                for ids, spans in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids))


@dataclass
class HFRun:
    """A Hugging Face model where suites expect a :class:`minidml.Run`: one model, ω = 1."""

    path: Path
    tokenizer: HFTokenizer
    students: list[HFModel]
    omega: torch.Tensor
    step: int | None = None
    champion: int = 0
    config: Any = None
    last_eval: dict[str, Any] | None = None


def load_hf(path: str | os.PathLike, device: str = "cpu") -> HFRun:
    """The causal LM and tokenizer of a Hugging Face model directory, in eval mode."""
    path = Path(path)
    meta = _config(path)
    if meta is None:
        raise MinidmlError(f"{path}: no readable config.json; give a minidml run directory or "
                           "a Hugging Face model directory")
    architectures = [a for a in meta.get("architectures") or [] if isinstance(a, str)]
    causal = [a for a in architectures if a.endswith(("ForCausalLM", "LMHeadModel"))]
    if not causal:
        raise MinidmlError(f"{path}: not a causal language model (architectures: "
                           f"{', '.join(architectures) or 'none'}); minidml eval scores causal "
                           "LMs such as LlamaForCausalLM or GPT2LMHeadModel")
    try:
        import transformers
    except ImportError:
        raise MinidmlError(f"{path}: a Hugging Face model needs transformers; "
                           f"{EXTRA_LINE}") from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except Exception as e:  # a damaged or half-downloaded file, whatever the library raises
        raise MinidmlError(f"{path}: cannot load the model or its tokenizer "
                           f"({describe(e, 200)})") from None
    dev = resolve_device(device)
    # transformers wraps its .to in functools.wraps, which hides that the method is bound
    # (unused where the hf extra is absent and transformers reads as Any)
    wrapped = HFModel(model.to(dev).eval(), causal[0])  # type: ignore[arg-type, unused-ignore]
    return HFRun(path, HFTokenizer(tokenizer), [wrapped], torch.ones(1, device=dev))
