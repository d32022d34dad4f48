"""Export to Hugging Face: the exported LlamaForCausalLM and tokenizer reproduce the student's
logits, minidml's token ids and minidml's BLiMP scores; the command refuses bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minidml
from minidml import Shape, Tokenizer, TrainConfig
from minidml.errors import MinidmlError
from minidml.evaluation.scoring import Scorer
from minidml.hf.export import export_hf, hf_backend_tokenizer, hf_config, write_hf
from minidml.model import Student, StudentConfig

from _helpers import assert_one_line_error, run_cli

TOL = 1e-4
SAMPLES = [
    "The dogs that the cat sees are sleeping.",
    "Those uncles above the new car arrive beside the mouse.",
    "", " ", "   ", "x", "a  b   c    d", " leading space", "trailing spaces  ",
    "tab\tseparated\tand\nnew\nlines\r\nand CRLF",
    "Café naïve façade — “curly quotes” and ‘single’ … ellipsis",
    "日本語のテキスト、中文句子。한국어 문장", "العربية עברית ελληνικά русский ไทย",
    "emoji 😀👍🏽 and a flag 🇫🇷 and zero\u200bwidth",
    "non\u00a0breaking\u2009thin\u3000ideographic",
    "combining e\u0301 vs é, ﬁ ligature, Ångström ½ ²",
    "digits 0123456789 3.14159 -2e-10 1,000,000",
    "MIXED case WORDS: I'm, don't, they've!? (parens) [brackets] {braces} #hash @at",
    "The cat without your person is young.\tThe  cat  without your person is young. ",
]


@pytest.fixture(scope="session")
def transformers(require_extra):
    """The ``hf`` extra (CI installs it: there a missing package is a failure, not a skip)."""
    return require_extra("hf", "transformers", "safetensors", "tokenizers")[0]


@pytest.fixture(scope="module")
def run(grammar_corpus, tmp_path_factory):
    """Two tiny students with tied embeddings; the second's width 48 × MLP ratio 2.9 = 139.2
    rounds up to an ffn_dim of 160, the first's 32 × 8/3 to 96."""
    cfg = TrainConfig(students=(Shape(1, 32, 2), Shape(2, 48, 3, mlp_ratio=2.9)), context=64,
                      batch_size=8, vocab_size=560, warmup_steps=2, eval_every=10,
                      eval_tokens=1024, steps=10)
    return minidml.train(grammar_corpus, tmp_path_factory.mktemp("runs") / "tiny", cfg)


@pytest.fixture(scope="module")
def exported(run, transformers, tmp_path_factory):
    """Every student of ``run``, exported."""
    root = tmp_path_factory.mktemp("hf")
    return [export_hf(run, i, root / f"student-{i}") for i in range(len(run.students))]


def hf_model(transformers, path: Path):
    model, info = transformers.LlamaForCausalLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model.eval()


def max_logit_error(student: Student, model, lengths=(1, 5, 17, 64), batch: int = 3,
                    seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for t in lengths:
            ids = torch.randint(0, student.config.vocab_size, (batch, t), generator=gen)
            ours, theirs = student(ids), model(input_ids=ids).logits
            assert theirs.shape == ours.shape
            worst = max(worst, (ours - theirs).abs().max().item())
    return worst


# ----------------------------------------------------------------------------- model
def test_config_and_weights(run, exported, transformers):
    from safetensors import safe_open

    for i, path in enumerate(exported):
        cfg = run.students[i].config
        config = json.loads((path / "config.json").read_text())
        assert config["intermediate_size"] == cfg.ffn_dim
        assert (config["hidden_size"], config["num_hidden_layers"],
                config["num_attention_heads"], config["num_key_value_heads"],
                config["vocab_size"], config["max_position_embeddings"]) == (
            cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_heads, cfg.vocab_size, cfg.context)
        assert config["tie_word_embeddings"] is True and config["torch_dtype"] == "float32"
        assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
            2, 3, 0)
        with safe_open(path / "model.safetensors", "pt") as f:
            names = set(f.keys())
            assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float32
        assert "lm_head.weight" not in names  # tied: the embedding is the output matrix
        assert len(names) == len(list(run.students[i].parameters()))
        assert {"model.norm.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.mlp.gate_proj.weight",
                "model.layers.0.post_attention_layernorm.weight"} <= names
        for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "generation_config.json", "README.md"):
            assert (path / name).is_file(), name
        assert (path / "tokenizer.model").read_bytes() == run.tokenizer.to_bytes()
    assert run.students[1].config.ffn_dim == 160 != round(48 * 2.9)


def test_logits_match_the_students(run, exported, transformers):
    for i, path in enumerate(exported):
        model = hf_model(transformers, path)
        emb = model.get_input_embeddings().weight
        assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # tied
        assert torch.equal(emb, run.students[i].embed.weight)
        assert max_logit_error(run.students[i], model) < TOL


def test_logits_match_with_other_rope_theta_eps_and_gains(run, transformers, tmp_path):
    """Norm gains and projections far from their initial values, a rope θ and an ε that are
    not transformers' defaults: a mix-up of any of them shows in the logits."""
    cfg = StudentConfig(vocab_size=run.tokenizer.vocab_size, n_layers=3, d_model=48, n_heads=3,
                        mlp_ratio=2.9, context=96, rope_theta=500.0, norm_eps=1e-3)
    torch.manual_seed(0)
    student = Student(cfg).eval()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * (0.5 if p.dim() == 1 else 0.05))
    out = write_hf(student, run.tokenizer, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert (config["rope_theta"], config["rms_norm_eps"]) == (500.0, 1e-3)
    model = hf_model(transformers, out)
    assert max_logit_error(student, model, lengths=(2, 31, 96), batch=2) < TOL
    # the same weights under transformers' default θ do not match: the check can fail
    config["rope_theta"] = 10_000.0
    (out / "config.json").write_text(json.dumps(config))
    assert max_logit_error(student, hf_model(transformers, out), lengths=(31,)) > 10 * TOL


# ----------------------------------------------------------------------------- tokenizer
def _loaders(transformers):
    major = int(transformers.__version__.split(".")[0])
    loaders = {
        "auto": lambda p: transformers.AutoTokenizer.from_pretrained(p),
        "auto-use_fast=False": lambda p: transformers.AutoTokenizer.from_pretrained(
            p, use_fast=False),
        "fast": lambda p: transformers.PreTrainedTokenizerFast.from_pretrained(p),
    }
    if major < 5:  # sentencepiece LlamaTokenizer; from 5 on, LlamaTokenizer is BPE-only
        loaders["slow-llama"] = lambda p: transformers.LlamaTokenizer.from_pretrained(p)
        loaders["fast-llama"] = lambda p: transformers.LlamaTokenizerFast.from_pretrained(p)
    return loaders


@pytest.fixture(scope="module")
def tokenizers_to_check(run, grammar_corpus, tmp_path_factory, transformers):
    """The run's tokenizer and richer unigram and BPE ones, each exported with a student."""
    lines = grammar_corpus.read_text(encoding="utf-8").splitlines() + SAMPLES * 5
    found = {"run": run.tokenizer}
    for kind in ("unigram", "bpe"):
        found[kind] = Tokenizer.train(lines, vocab_size=560, model_type=kind, num_threads=1)
    root = tmp_path_factory.mktemp("tok")
    out = {}
    for name, tok in found.items():
        student = Student(StudentConfig(vocab_size=tok.vocab_size, n_layers=1, d_model=32,
                                        n_heads=2, context=64))
        out[name] = (tok, write_hf(student, tok, root / name))
    return out


@pytest.mark.parametrize("which", ["run", "unigram", "bpe"])
def test_tokenizer_gives_minidml_ids(which, tokenizers_to_check, transformers):
    tok, path = tokenizers_to_check[which]
    rows = [tok.encode(s) for s in SAMPLES]
    assert any(len(tok.id_to_piece(i)) > 3 for r in rows for i in r)  # multi-character pieces
    assert any(4 <= i < 260 for r in rows for i in r)  # and byte fallback (ids 4..259)
    for name, load in _loaders(transformers).items():
        hf = load(path)
        assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (
            2, 3, 0, 1), name
        for text, ids in zip(SAMPLES, rows, strict=True):
            assert hf(text, add_special_tokens=False)["input_ids"] == ids, (name, text)
            assert hf(text)["input_ids"] == [Tokenizer.bos_id, *ids], (name, text)
            if name != "slow-llama":  # which drops a leading space when decoding
                assert hf.decode(ids) == tok.decode(ids), (name, text)
        batch = hf(SAMPLES, add_special_tokens=False)["input_ids"]
        assert batch == rows, name


@pytest.mark.parametrize("which", ["run", "unigram", "bpe"])
def test_spans_are_the_hugging_face_offsets(which, tokenizers_to_check, transformers):
    """What the BabyLM 2026 rule reads: minidml's tokens and character spans equal the
    exported tokenizer's ids and offsets (BOS in front), on the samples and on random texts
    rich in spaces, unknown characters and byte pieces."""
    import random

    tok, path = tokenizers_to_check[which]
    hf = transformers.AutoTokenizer.from_pretrained(path)
    rng = random.Random(0)
    alphabet = list("the cat sat  \n\t.,жü😀é") + ["The", "dogs", " ", "  ", "ж😀"]
    texts = [t for t in SAMPLES if "\u2581" not in t] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(400)]
    mine = tok.encode_with_spans(texts)
    for text, (ids, spans) in zip(texts, mine, strict=True):
        enc = hf(text, return_offsets_mapping=True)
        assert ids == enc["input_ids"], text
        assert spans == [tuple(s) for s in enc["offset_mapping"]], text


def test_tokenizer_mismatch_would_be_seen(tokenizers_to_check, transformers):
    """The word boundary changes the ids of these samples: an export that lost it, or a
    tokenizer without one given a space in front, would fail the test above."""
    tok, _ = tokenizers_to_check["unigram"]
    assert tok.boundary == "prefix"
    backend = hf_backend_tokenizer(tok)
    backend.pre_tokenizer = None  # the boundary lost
    lost = [backend.encode(s, add_special_tokens=False).ids for s in SAMPLES]
    assert sum(a != tok.encode(s) for a, s in zip(lost, SAMPLES, strict=True)) > 10
    bare = Tokenizer.train(SAMPLES * 20, vocab_size=400, num_threads=1, boundary="none")
    spaced = [bare.encode(" " + s) for s in SAMPLES]
    assert sum(a != bare.encode(s) for a, s in zip(spaced, SAMPLES, strict=True)) > 10


# ----------------------------------------------------------------------------- BLiMP
def blimp_sample(data_dir: Path, per_file: int = 6, files: int = 12) -> list[tuple[str, str]]:
    folder = data_dir / "babylm-eval" / "blimp_filtered"
    paths = sorted(folder.glob("*.jsonl"))
    if len(paths) != 67:
        message = f"{folder}: {len(paths)} BLiMP paradigm files, expected 67"
        if os.environ.get("MINIDML_DATA_DIR"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    pairs = []
    for path in paths[::len(paths) // files][:files]:
        with open(path, encoding="utf-8") as f:
            for line, _ in zip(f, range(per_file), strict=False):
                row = json.loads(line)
                pairs.append((row["sentence_good"], row["sentence_bad"]))
    return pairs


def hf_scores(model, hf_tok, texts: list[str]) -> torch.Tensor:
    """Sum of token log-probabilities after one BOS, with transformers alone: the tokenizer
    adds the BOS, batches are right-padded with an attention mask."""
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert (ids[:, 0] == hf_tok.bos_token_id).all()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    return (logp * mask[:, 1:]).sum(1).double()


def test_blimp_scores_match_the_scorer(run, exported, transformers, data_dir):
    pairs = blimp_sample(data_dir)
    i = run.champion
    texts = [s for pair in pairs for s in pair]
    fits = [len(run.tokenizer.encode(" " + t)) + 1 <= run.config.context for t in texts]
    pairs = [p for k, p in enumerate(pairs) if fits[2 * k] and fits[2 * k + 1]]
    assert len(pairs) >= 40, len(pairs)
    texts = [s for pair in pairs for s in pair]
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported[i])
    model = hf_model(transformers, exported[i])
    theirs = hf_scores(model, hf_tok, [" " + t for t in texts])  # the pipeline's rule
    ours = Scorer([run.students[i]], run.tokenizer, labels=["student-0"],
                  batch_size=16).score(texts)["student-0"]
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-3), (theirs - ours).abs().max()
    assert (theirs != 0).all() and theirs.std() > 1  # real, varied scores
    good, bad = theirs[0::2], theirs[1::2]
    assert torch.equal(good > bad, ours[0::2] > ours[1::2])


# ----------------------------------------------------------------------------- command line
def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_cli_exports_the_champion(run, transformers, tmp_path, capsys):
    records = [json.loads(line) for line in
               (run.path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r.get("event") == "eval"][-1]["val_loss"]
    best = min(range(len(val)), key=val.__getitem__)
    assert run.champion == best
    out = tmp_path / "hf"
    code, text, err = run_cli("export", run.path, "--student", "champion", "--format", "hf",
                              out, capsys=capsys)
    assert code == 0, err
    assert f"student {best}" in text and str(out) in text
    loaded = minidml.load(run.path)
    model = hf_model(transformers, out)
    assert max_logit_error(loaded.students[best], model) < TOL
    other = loaded.students[1 - best]
    assert json.loads((out / "config.json").read_text())["hidden_size"] != \
        other.config.d_model
    card = (out / "README.md").read_text()
    assert f"Student {best}" in card and "champion" in card
    assert leftovers(tmp_path) == []
    # the default is the champion, too; an index picks that student
    code, _, err = run_cli("export", run.path, tmp_path / "default", capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "default/model.safetensors").read_bytes() == \
        (out / "model.safetensors").read_bytes()
    code, _, err = run_cli("export", run.path, "--student", 1 - best, tmp_path / "other",
                           capsys=capsys)
    assert code == 0, err
    assert max_logit_error(other, hf_model(transformers, tmp_path / "other")) < TOL


def test_cli_bad_input_is_one_line_and_writes_nothing(run, transformers, tmp_path, capsys):
    out = tmp_path / "out"
    for args, needles in [
        ((tmp_path / "no-run", out), ("no-run", "not a minidml run")),
        ((run.path, out, "--student", "2"), ("--student 2", "2 students")),
        ((run.path, out, "--student", "-1"), ("--student -1",)),
        ((run.path, out, "--student", "best"), ("--student best", "champion")),
        ((run.path, out, "--student", "²"), ("--student ²", "champion")),
        ((run.path, run.path / "checkpoints", "--force"), ("not an earlier export",)),
        ((run.path, out, "--format", "onnx"), ("--format onnx", "hf")),
        ((run.path, run.path, "--force"), ("the run itself",)),
        ((run.path, run.path.parent, "--force"), ("the run itself",)),
    ]:
        code, _, err = run_cli("export", *args, capsys=capsys)
        assert_one_line_error(code, err, *needles)
        assert not out.exists()
        assert leftovers(tmp_path) == []
    assert (run.path / "config.json").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("export", run.path, blocker, capsys=capsys)
    assert_one_line_error(code, err, "not a directory")


def test_cli_refuses_a_non_empty_out_dir_unless_forced(run, transformers, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli("export", run.path, "--student", "0", out, capsys=capsys)[0] == 0  # empty
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli("export", run.path, "--student", "1", out, capsys=capsys)
    assert_one_line_error(code, err, str(out), "--force", "not empty")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, _, err = run_cli("export", run.path, "--student", "1", out, "--force", capsys=capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 48
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_directory(run, transformers, tmp_path, monkeypatch):
    import safetensors.torch

    out = tmp_path / "out"
    export_hf(run, 0, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    for target, force in ((out, True), (tmp_path / "new", False)):
        with pytest.raises(MinidmlError, match=r"cannot write model.safetensors \(No space "
                                               r"left on device\)"):
            export_hf(run, 1, target, force=force)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []
    with pytest.raises(MinidmlError, match="force=True"):
        export_hf(run, 1, out)


def test_missing_extra_is_one_line(run, tmp_path, capsys, monkeypatch):
    for name in ("transformers", "safetensors", "tokenizers"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, as if not installed
    code, _, err = run_cli("export", run.path, tmp_path / "out", capsys=capsys)
    assert_one_line_error(code, err, "pip install 'minidml[hf]'")
    assert not (tmp_path / "out").exists()


def test_core_does_not_import_the_extra():
    code = ("import sys, minidml, minidml.cli.commands, minidml.hf.export, minidml.launch; "
            "bad = [m for m in ('transformers', 'safetensors', 'tokenizers') "
            "if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_hf_config_is_a_llama_config(transformers):
    cfg = StudentConfig(vocab_size=1000, n_layers=5, d_model=96, n_heads=3, mlp_ratio=3.1,
                        context=128, rope_theta=20_000.0, norm_eps=1e-6)
    config = transformers.LlamaConfig(**hf_config(cfg))
    assert (config.intermediate_size, config.head_dim, config.rms_norm_eps) == (
        cfg.ffn_dim, 32, 1e-6)
    theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    assert theta == 20_000.0 and config.tie_word_embeddings


def test_an_exported_student_scores_the_same_through_both_routes(run, exported, transformers,
                                                                 data_dir, tmp_path, capsys):
    """``minidml eval RUN --student i`` and ``minidml eval HF_DIR`` on the student's export:
    the same pairs, the same log-likelihoods."""
    i = run.champion
    found = {}
    for name, target, extra in (("run", run.path, ["--student", str(i)]),
                                ("hf", exported[i], [])):
        out = tmp_path / f"{name}.json"
        code, _, err = run_cli("eval", target, *extra, "--suite", "blimp", "--limit", "2",
                               "--data-dir", data_dir, "--output", out, "--log-samples",
                               "--quiet", capsys=capsys)
        assert code == 0, err
        found[name] = [json.loads(line) for line in
                       out.with_name(out.stem + ".samples.jsonl").read_text().splitlines()]
    ours = [v for s in found["run"] for v in s["loglikelihoods"][f"student-{i}"]]
    theirs = [v for s in found["hf"] for v in s["loglikelihoods"]["student-0"]]
    assert [s["good"] for s in found["run"]] == [s["good"] for s in found["hf"]]
    assert len(ours) >= 200 and ours == pytest.approx(theirs, abs=1e-3)


def test_a_full_disk_during_export_names_the_file_and_leaves_nothing(run, transformers,
                                                                      tmp_path, monkeypatch,
                                                                      capsys):
    """safetensors reports a write error as its own exception: it is one line naming the
    file, and neither the target nor a temporary directory is left."""
    import safetensors.torch

    def full(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 27, "
                                          "kind: FileTooLarge, message: \"File too large\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code, _, err = run_cli("export", str(run.path), str(tmp_path / "hf"), capsys=capsys)
    assert_one_line_error(code, err, str(tmp_path / "hf"), "model.safetensors", "File too large")
    assert list(tmp_path.iterdir()) == []
