"""Export a trained student to the Hugging Face ``transformers`` format (a Llama checkpoint).

A student already follows Llama's conventions (pre-norm RMSNorm, rotate-half rotary
embeddings, SwiGLU, no biases, tied embeddings), so the export only renames parameters:

    embed.weight                    model.embed_tokens.weight  (also the output matrix: tied)
    layers.N.attn_norm.weight       model.layers.N.input_layernorm.weight
    layers.N.attn.{q,k,v,o}_proj    model.layers.N.self_attn.{q,k,v,o}_proj
    layers.N.mlp_norm.weight        model.layers.N.post_attention_layernorm.weight
    layers.N.mlp.{gate,up,down}_proj  model.layers.N.mlp.{gate,up,down}_proj
    norm.weight                     model.norm.weight

The directory written holds ``config.json`` (a ``LlamaConfig``), ``generation_config.json``,
``model.safetensors`` (float32; ``lm_head.weight`` is not stored, since it is the tied
embedding), the run's sentencepiece model as ``tokenizer.model``, a ``tokenizer.json`` built
from it for the ``tokenizers`` library, ``tokenizer_config.json``,
``special_tokens_map.json`` and a ``README.md`` model card. ``AutoTokenizer`` then encodes
text to exactly the ids of :class:`minidml.Tokenizer` (plus one BOS in front unless
``add_special_tokens=False``), and ``LlamaForCausalLM`` computes the student's logits.

Writing needs the optional extra ``hf`` (``transformers``, ``safetensors`` and, through
``transformers``, ``tokenizers``); the core never imports them. The directory is built beside
its destination under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import _io
from .._version import __version__
from ..errors import MinidmlError, one_line
from ..model import Student, StudentConfig
from ..spm_model import bpe_merges, spm_pieces
from ..tokenizer import BOS_ID, EOS_ID, META, PAD_ID, UNK_ID, Tokenizer

if TYPE_CHECKING:
    from ..rundir import Run

FORMATS = ("hf",)
INSTALL_HINT = "install with pip install 'minidml[hf]'"
WEIGHTS_FILE = "model.safetensors"
REVISIONS_FILE = "revisions.json"  # what export_revisions writes beside the revisions


# ----------------------------------------------------------------------------- dependencies
def require_hf() -> None:
    """Fail with one line when the ``hf`` extra (transformers, safetensors) is missing."""
    missing = [name for name in ("transformers", "safetensors", "tokenizers")
               if not _importable(name)]
    if missing:
        raise MinidmlError(f"exporting to Hugging Face needs {' and '.join(missing)}; "
                           f"{INSTALL_HINT}")


def _importable(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (``transformers`` is slow)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MinidmlError(f"cannot import {name} ({e}); {INSTALL_HINT}") from None


# ----------------------------------------------------------------------------- model
def hf_config(cfg: StudentConfig) -> dict[str, Any]:
    """``config.json`` of a ``LlamaConfig`` with the student's shape (keys read by every
    ``transformers`` release since 4.40; newer ones move ``rope_theta`` into
    ``rope_parameters`` themselves)."""
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        version = None
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if version:
        config["transformers_version"] = version
    return config


_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    **{f"attn.{p}.weight": f"self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj",
                                                             "o_proj")},
    **{f"mlp.{p}.weight": f"mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")},
}


def hf_name(name: str) -> str:
    """The Hugging Face Llama name of a :class:`~minidml.model.Student` parameter."""
    if name == "embed.weight":
        return "model.embed_tokens.weight"
    if name == "norm.weight":
        return "model.norm.weight"
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    raise ValueError(f"no Hugging Face name for student parameter {name!r}")


def hf_state_dict(student: Student) -> dict[str, torch.Tensor]:
    """The student's weights under Llama names: float32, contiguous, on the CPU, each its own
    copy (the tied output matrix is the embedding, so it is not repeated)."""
    return {hf_name(name): p.detach().to("cpu", torch.float32).contiguous().clone()
            for name, p in student.named_parameters()}


# ----------------------------------------------------------------------------- tokenizer
def hf_backend_tokenizer(tokenizer: Tokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` that splits text exactly as ``tokenizer`` does.

    Sentencepiece with minidml's settings only writes spaces as ``▁`` (no other
    normalisation), then runs its unigram lattice or BPE merges with byte fallback; that is a
    ``Replace(" ", "▁")`` normaliser and the same model. A tokenizer with the word boundary
    (:attr:`Tokenizer.boundary` ``"prefix"``) adds a ``Metaspace`` pre-tokenizer that puts
    ``▁`` in front of a text that does not already begin with one (and does not split), and
    its decoder drops that first space again. A BOS is added in front by the post-processor;
    decoding turns ``▁`` back into spaces and fuses bytes.
    """
    require_hf()
    tk = _import("tokenizers")
    model_type, pieces = spm_pieces(tokenizer)
    specials = {i: pieces[i][0] for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID)}
    if model_type == "unigram":
        model = tk.models.Unigram([(p, s) for p, s, _ in pieces], unk_id=UNK_ID,
                                  byte_fallback=True)
    else:
        model = tk.models.BPE({p: i for i, (p, _, _) in enumerate(pieces)}, bpe_merges(pieces),
                              unk_token=specials[UNK_ID], fuse_unk=True, byte_fallback=True)
    backend = tk.Tokenizer(model)
    backend.normalizer = tk.normalizers.Replace(" ", META)
    decoders = [tk.decoders.Replace(META, " "), tk.decoders.ByteFallback(), tk.decoders.Fuse()]
    if tokenizer.boundary == "prefix":
        # "first": the boundary goes before the text, not after a special token inside it
        backend.pre_tokenizer = tk.pre_tokenizers.Metaspace(
            replacement=META, prepend_scheme="first", split=False)
        decoders.append(tk.decoders.Strip(" ", 1, 0))
    backend.decoder = tk.decoders.Sequence(decoders)
    backend.add_special_tokens([tk.AddedToken(specials[i], special=True, normalized=False)
                                for i in sorted(specials)])
    bos = specials[BOS_ID]
    backend.post_processor = tk.processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, BOS_ID)])
    return backend


def _tokenizer_json(backend: Any) -> dict[str, Any]:
    """The backend's ``tokenizer.json``, BPE merges written as ``"left right"`` strings: the
    form that every ``tokenizers`` release reads (pieces never hold a space, which
    sentencepiece writes as ``▁``)."""
    data = json.loads(backend.to_str())
    merges = data["model"].get("merges")
    if merges and all(isinstance(m, list) and not any(" " in h for h in m) for m in merges):
        data["model"]["merges"] = [" ".join(m) for m in merges]
    return data


def _tokenizer_configs(tokenizer: Tokenizer, context: int) -> tuple[dict, dict]:
    names = {i: tokenizer.id_to_piece(i) for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID)}
    special = {"bos_token": names[BOS_ID], "eos_token": names[EOS_ID],
               "unk_token": names[UNK_ID], "pad_token": names[PAD_ID]}
    config = {
        # the generic fast tokenizer reads tokenizer.json as it is; the Llama classes of
        # transformers >= 5 rebuild a BPE model, which would not fit a unigram vocabulary
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": True,
        "add_eos_token": False,
        # the word boundary, where there is one, is tokenizer.json's Metaspace and the
        # sentencepiece model's dummy prefix. "add_prefix_space" itself is left out, since
        # transformers 4's
        # LlamaTokenizerFast would rebuild tokenizer.json from the .model file whenever it
        # is given, with Llama's own special pieces in the place of minidml's
        "legacy": True,  # a sentencepiece LlamaTokenizer (transformers 4) encodes text as is
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "model_max_length": context,
        "padding_side": "right",
        "added_tokens_decoder": {
            str(i): {"content": names[i], "lstrip": False, "normalized": False,
                     "rstrip": False, "single_word": False, "special": True}
            for i in sorted(names)},
    }
    return config, special


# ----------------------------------------------------------------------------- writing
def _model_card(student: Student, *, run: Run | None, index: int | None) -> str:
    cfg = student.config
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [minidml, llama, babylm]", "---", ""]
    title = "a minidml student" if index is None else f"minidml student {index}"
    lines += [f"# {title}", ""]
    if run is not None:
        losses = (run.last_eval or {}).get("val_loss") or []
        loss = (f", validation loss {losses[index]:.4f}"
                if index is not None and index < len(losses) else "")
        champion = " (the run's champion: lowest validation loss)" \
            if index is not None and losses and run.champion == index else ""
        lines += [f"Student {index} of the run `{run.path.name}` at step {run.step}"
                  f"{champion}{loss}; trained by minidml {__version__} "
                  f"(mode `{run.config.mode}`, {len(run.students)} students).", ""]
    lines += [
        "| | |", "| --- | --- |",
        f"| architecture | LlamaForCausalLM, {cfg.n_layers} layers, width {cfg.d_model}, "
        f"{cfg.n_heads} heads, SwiGLU {cfg.ffn_dim} |",
        f"| parameters | {cfg.n_params:,} (tied input and output embeddings) |",
        f"| context | {cfg.context} tokens (rotary, θ = {cfg.rope_theta:g}) |",
        f"| vocabulary | {cfg.vocab_size} sentencepiece pieces, byte fallback; "
        f"pad {PAD_ID}, unk {UNK_ID}, bos {BOS_ID}, eos {EOS_ID} |",
        "",
        "```python",
        "from transformers import AutoTokenizer, LlamaForCausalLM",
        'tokenizer = AutoTokenizer.from_pretrained("THIS_DIR")',
        'model = LlamaForCausalLM.from_pretrained("THIS_DIR")',
        "```",
        "",
        "Its logits equal the minidml student's (float32), and the tokenizer gives minidml's "
        "ids, with one BOS in front unless `add_special_tokens=False`. A sentence's score in "
        "minidml (and in the BabyLM pipeline) is the sum of its tokens' log-probabilities "
        "after one BOS token. Load the tokenizer with `AutoTokenizer` (or "
        "`PreTrainedTokenizerFast`); text that spells a special token (`<s>`), a byte piece "
        "(`<0x41>`) or sentencepiece's space symbol `▁` is split differently than by "
        "minidml.",
        "",
        "Evaluate it with lm-evaluation-harness: `lm_eval --model hf --model_args "
        "pretrained=THIS_DIR --tasks blimp`.",
        "",
    ]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_out_dir(out: Path, force: bool, protect: Path | None) -> None:
    if out.exists() and not out.is_dir():
        raise MinidmlError(f"OUT_DIR {out}: exists and is not a directory; choose another path")
    if protect is not None:
        here, run = out.resolve(), protect.resolve()
        if here == run or here in run.parents:
            raise MinidmlError(f"OUT_DIR {out}: would replace the run itself; choose a "
                               "directory outside it or inside it (e.g. RUN/hf)")
        if run in here.parents and out.is_dir() and any(out.iterdir()) and not any(
                (out / f).exists() for f in (WEIGHTS_FILE, REVISIONS_FILE)
        ):  # e.g. RUN/checkpoints: not an export (of a student, or of its revisions)
            raise MinidmlError(f"OUT_DIR {out}: part of the run, not an earlier export; "
                               "choose a new directory (e.g. RUN/hf)")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MinidmlError(f"OUT_DIR {out}: exists and is not empty; pass --force "
                           "(force=True) to replace it, or choose another directory")


def write_hf(student: Student, tokenizer: Tokenizer, out_dir: str | os.PathLike, *,
             force: bool = False, card: str | None = None,
             protect: str | os.PathLike | None = None) -> Path:
    """Write ``student`` and ``tokenizer`` as a Hugging Face Llama directory ``out_dir``.

    The directory is built beside ``out_dir`` under a temporary name and renamed into place
    when complete; an existing non-empty ``out_dir`` is refused unless ``force``. ``protect``
    is a directory that ``out_dir`` must not be or contain (the run itself).
    """
    require_hf()
    out = Path(out_dir)
    _check_out_dir(out, force, Path(protect) if protect is not None else None)
    if student.config.vocab_size != tokenizer.vocab_size:
        raise MinidmlError(f"student vocabulary {student.config.vocab_size} differs from the "
                           f"tokenizer's {tokenizer.vocab_size}; export a student of this run")
    safetensors_torch = _import("safetensors.torch")
    backend = hf_backend_tokenizer(tokenizer)
    tok_config, special = _tokenizer_configs(tokenizer, student.config.context)
    tmp = _temporary_beside(out)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        _write_json(tmp / "config.json", hf_config(student.config))
        _write_json(tmp / "generation_config.json", {
            "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID})
        try:
            safetensors_torch.save_file(hf_state_dict(student), str(tmp / WEIGHTS_FILE),
                                        metadata={"format": "pt"})
        except Exception as e:  # noqa: BLE001 - safetensors reports I/O errors as its own
            if isinstance(e, OSError) and e.filename:
                raise
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise OSError(0, one_line(why, 160), str(out / WEIGHTS_FILE)) from None
        _fsync(tmp / WEIGHTS_FILE)
        (tmp / "tokenizer.model").write_bytes(tokenizer.to_bytes())
        _fsync(tmp / "tokenizer.model")
        _write_json(tmp / "tokenizer.json", _tokenizer_json(backend))
        _write_json(tmp / "tokenizer_config.json", tok_config)
        _write_json(tmp / "special_tokens_map.json", special)
        _write_text(tmp / "README.md", card if card is not None
                    else _model_card(student, run=None, index=None))
        _io.fsync_dir(tmp)
        _replace_dir(tmp, out)
    except OSError as e:  # a full disk, say: name the file, leave nothing half-written
        shutil.rmtree(tmp, ignore_errors=True)
        where = Path(e.filename).name if e.filename else "the export"
        raise MinidmlError(f"OUT_DIR {out}: cannot write {where} ({e.strerror or e}); free "
                           "space or choose another directory; nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _temporary_beside(out: Path) -> Path:
    """A new empty directory beside ``out``, to build it under a temporary name."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise MinidmlError(f"OUT_DIR {out}: cannot write beside it ({e.strerror}); choose "
                           "another directory") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first, removed after."""
    old = None
    if out.exists():
        with contextlib.suppress(OSError):  # an empty directory is replaced by the rename
            out.rmdir()
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:  # put the previous directory back
            os.replace(old / out.name, out)
            old.rmdir()
        raise
    _io.fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def resolve_student(run: Run, student: int | str) -> int:
    """A student index from an int, a decimal string, or ``"champion"``."""
    if isinstance(student, str):
        if student == "champion":
            return run.champion
        text = student.strip()
        if not (text.isascii() and text.isdigit()):
            raise MinidmlError(f"--student {student}: give a student index or 'champion'")
        student = int(text)
    if isinstance(student, bool) or not isinstance(student, int) or not \
            0 <= student < len(run.students):
        raise MinidmlError(f"--student {student}: the run has {len(run.students)} students "
                           f"(0..{len(run.students) - 1}); give one of them or 'champion'")
    return student


def export_hf(run: Run, student: int | str, out_dir: str | os.PathLike, *,
              force: bool = False) -> Path:
    """Export student ``student`` (an index or ``"champion"``) of ``run`` to ``out_dir`` as a
    Hugging Face Llama model; returns ``out_dir``. See the module docstring for the files."""
    index = resolve_student(run, student)
    model = run.students[index]
    return write_hf(model, run.tokenizer, out_dir, force=force,
                    card=_model_card(model, run=run, index=index), protect=run.path)


def export_revisions(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     student: int | str = "champion", force: bool = False) -> dict[str, Path]:
    """Every revision of a run (its checkpoints at words seen, ``chck_1M`` …, see
    :mod:`minidml.words`) and its final checkpoint as ``main``, each a Hugging Face directory
    ``out_dir/<revision>`` of the same student (``"champion"``: the final checkpoint's), with
    ``revisions.json`` (revision → step and words seen) and a ``README.md`` that gives the
    command uploading each directory as a branch of one repository. Built under a temporary
    name beside ``out_dir`` and renamed into place when complete. Returns revision → path."""
    from ..rundir import checkpoint_words, checkpoints, load, revisions

    require_hf()
    run_path, out = Path(run_dir), Path(out_dir)
    final = load(run_path)
    index = resolve_student(final, student)
    marked = [(c, name) for c in checkpoints(run_path) for name in revisions(c)]
    if not marked:
        raise MinidmlError(f"{run_path}: no checkpoint at words seen to export as revisions; "
                           "train with --track or --checkpoint-words")
    _check_out_dir(out, force, run_path)
    tmp = _temporary_beside(out)
    index_record: dict[str, Any] = {}
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for ckpt, name in marked:
            step = int(ckpt.name.split("-")[1])
            run = final if step == final.step else load(run_path, step=step)
            model = run.students[index]
            write_hf(model, run.tokenizer, tmp / name,
                     card=_model_card(model, run=run, index=index))
            index_record[name] = {"step": step, **{k: v for k, v in checkpoint_words(
                ckpt).items() if k in ("words", "words_total")}}
        write_hf(final.students[index], final.tokenizer, tmp / "main",
                 card=_model_card(final.students[index], run=final, index=index))
        last = checkpoints(run_path)[-1]
        index_record["main"] = {"step": final.step, **{k: v for k, v in checkpoint_words(
            last).items() if k in ("words", "words_total")}}
        _write_json(tmp / REVISIONS_FILE, {"run": str(run_path), "student": index,
                                             "revisions": index_record})
        _write_text(tmp / "README.md", _revisions_card(run_path, index, index_record))
        _io.fsync_dir(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: out / name for name in index_record}


def _revisions_card(run_path: Path, index: int, record: dict[str, Any]) -> str:
    rows = "\n".join(f"| `{name}` | {r['step']} | {r.get('words', '')} |"
                     for name, r in record.items())
    return f"""# Revisions of student {index} of `{run_path.name}`

One Hugging Face directory per revision, named as the BabyLM rules name them, and `main`.
Upload each as a branch of one repository (the `hf` command of `huggingface_hub`; it creates
the repository's branches as it goes):

```sh
for r in */; do hf upload YOUR_NAME/YOUR_MODEL "$r" . --revision "${{r%/}}"; done
```

| revision | step | words seen |
| --- | ---: | ---: |
{rows}
"""
