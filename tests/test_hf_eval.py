"""Hugging Face causal LMs scored by minidml's suites: tiny randomly initialised Llama and
GPT-2 models, saved here (no downloads), give the log-probabilities transformers gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _helpers import assert_one_line_error, run_cli

SENTENCES = ["The dogs that the cat sees are sleeping.", "A boy was eating the apples.",
             "Those uncles above the new car arrive beside the mouse.",
             "Who did the teachers think that Mary had met?", "Every girl has cried."] * 20


@pytest.fixture(scope="module")
def transformers(require_extra):
    return require_extra("hf", "transformers", "tokenizers")[0]


def _tokenizer(transformers, bos: str | None, eos: str):
    """A byte-level BPE tokenizer trained here; GPT-2-like ones have no BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [t for t in (bos, eos) if t is not None]
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos,
                                                eos_token=eos)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def hf_dir(request, transformers, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    if request.param == "llama":
        tok = _tokenizer(transformers, "<s>", "</s>")
        config = transformers.LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = transformers.LlamaForCausalLM(config)
    else:
        tok = _tokenizer(transformers, None, "<|endoftext|>")
        config = transformers.GPT2Config(
            vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
            eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
        model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # sharper than the initialisation, so that scores vary
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _direct(transformers, path: Path, texts: list[str], protocol: str) -> list[float]:
    """One text at a time: Σ log p of the tokens of " " + text after the prefix token
    (lm-eval), or of every token after the first of the text as the tokenizer encodes it,
    special tokens included (babylm-2026: a GPT-2 tokenizer adds none, so its first word is
    context)."""
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    out = []
    with torch.no_grad():
        for text in texts:
            if protocol == "lm-eval":
                ids = torch.tensor([[prefix, *tok(" " + text,
                                                  add_special_tokens=False).input_ids]])
            else:
                ids = torch.tensor([tok(text).input_ids])
            logp = model(input_ids=ids).logits.float().log_softmax(-1)
            out.append(float(logp[0, :-1].gather(-1, ids[0, 1:, None]).sum()))
    return out


@pytest.mark.parametrize("protocol", ["babylm-2026", "lm-eval"])
def test_an_hf_model_scores_as_transformers_does(hf_dir, transformers, data_dir, tmp_path,
                                                 capsys, protocol):
    out = tmp_path / "results.json"
    code, stdout, err = run_cli("eval", hf_dir, "--suite", "blimp", "--limit", "2",
                              "--data-dir", data_dir, "--output", out, "--log-samples",
                              "--protocol", protocol, "--quiet", capsys=capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["students"][0]["shape"] in ("LlamaForCausalLM", "GPT2LMHeadModel")
    assert doc["suites"]["blimp"]["status"] == "ok"
    samples = [json.loads(line) for line in
               out.with_name(out.stem + ".samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 100  # 2 pairs from each BLiMP paradigm
    texts = [t for s in samples for t in (s["good"], s["bad"])]
    ours = [v for s in samples for v in s["loglikelihoods"]["student-0"]]
    theirs = _direct(transformers, hf_dir, texts, protocol)
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert len(set(round(v, 3) for v in theirs)) > len(theirs) // 2  # real, varied scores
    # the score is the share of pairs whose good sentence scores at least as high
    good, bad = theirs[0::2], theirs[1::2]
    wins = sum(g >= b for g, b in zip(good, bad, strict=True)) / len(good)
    blimp = doc["groups"]["student-0"]["blimp"]
    assert blimp["score"] == pytest.approx(wins, abs=0.02)  # a mean of per-task means


def test_glue_fine_tunes_an_hf_model(hf_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "glue.json"
    code, _, err = run_cli("eval", hf_dir, "--suite", "glue", "--glue-tasks", "rte",
                         "--max-train-examples", "16", "--epochs", "1", "--limit", "8",
                         "--data-dir", data_dir, "--output", out, "--quiet", capsys=capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["suites"]["glue"]["status"] == "ok"
    assert 0.0 <= doc["results"]["student-0"]["glue/rte"]["acc"] <= 1.0


def test_damaged_weights_are_one_line(hf_dir, tmp_path, capsys):
    """A half-downloaded model.safetensors (the library raises its own error type): one line
    naming the directory, not an internal error."""
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(hf_dir, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    code, _, err = run_cli("eval", cut, "--suite", "agreement", capsys=capsys)
    assert_one_line_error(code, err, str(cut), "cannot load the model or its tokenizer")


def test_the_width_is_what_the_head_reads(transformers):
    """OPT projects its last states to a narrower width before the head: trunk() gives that
    width, and so does the config (a GLUE head is built on it)."""
    from minidml.hf.models import HFModel

    config = transformers.OPTConfig(vocab_size=50, hidden_size=16, word_embed_proj_dim=8,
                                    num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
                                    max_position_embeddings=64, do_layer_norm_before=False)
    model = HFModel(transformers.OPTForCausalLM(config).eval(), "OPTForCausalLM")
    hidden = model.trunk(torch.randint(0, 50, (1, 5)))
    assert model.config.d_model == hidden.shape[-1] == 8


def test_a_directory_that_is_not_a_causal_lm_is_one_line(tmp_path, capsys):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"],
                                                  "model_type": "bert"}))
    code, _, err = run_cli("eval", bert, "--suite", "blimp", capsys=capsys)
    assert_one_line_error(code, err, str(bert), "not a causal language model")
    assert sorted(p.name for p in bert.iterdir()) == ["config.json"]  # nothing written
    code, _, err = run_cli("eval", bert, "--suite", "blimp", "--step", "all", capsys=capsys)
    assert_one_line_error(code, err, "--step all", "Hugging Face model")


def test_a_missing_hf_extra_is_one_line(tmp_path, monkeypatch, capsys):
    import sys

    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"],
                                                   "model_type": "llama"}))
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    code, _, err = run_cli("eval", llama, "--suite", "blimp", capsys=capsys)
    assert_one_line_error(code, err, str(llama), "minidml[hf]")
    assert sorted(p.name for p in llama.iterdir()) == ["config.json"]
