"""The reading suite: its regressions against statsmodels, its table against pandas, its
surprisal (the official ``get_p2`` rule) against the students computed directly, and the suite
end to end, bad input included."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from minidml.errors import MinidmlError
from minidml.evaluation.plugins import make_manager, suites
from minidml.evaluation.runner import evaluate
from minidml.evaluation.scoring import ENSEMBLE, Scorer
from minidml_plugins import reading

MEASURES = reading.MEASURES
HEADER = ["", "item", "word", "word2", "sentence", "context_length", "sent_id", "item_id",
          "list", "Subtlex_log10", "length", *MEASURES, "prev_word", "prev_item", "prev_length"]
SENTENCES = ("the dog sees the cats near the house .",
             "None of the city people dress like that .",
             "Arthur placed the chocolate bars on the counter .",
             "these teachers were happy without their umbrellas .",
             "a child chases the birds quietly .")


@pytest.fixture(scope="module")
def available():
    return suites(make_manager(builtins=("reading",), entry_points=False))


def official_rows(seed: int = 0, holes: bool = True) -> list[dict[str, str]]:
    """Rows in the official format: each word of each sentence after its first, its context,
    the previous word's (empty for the second word) and made-up measures that depend on the
    word's length, with some cells left empty."""
    rng = random.Random(seed)
    rows = []
    for s, sentence in enumerate(SENTENCES):
        words = sentence.split()
        for j in range(1, len(words)):
            word, prev = words[j], words[j - 1]
            first = j == 1
            row = {"item": " ".join(words[:j]), "word": word, "word2": word.upper(),
                   "sentence": sentence, "context_length": str(j), "sent_id": str(s),
                   "item_id": str(100 * s + j), "list": str(rng.randint(1, 7)),
                   "Subtlex_log10": repr(rng.uniform(5, 15)), "length": str(len(word)),
                   "prev_word": "" if first else prev,
                   "prev_item": "" if first else " ".join(words[:j - 1]),
                   "prev_length": "-1" if first else str(len(prev))}
            for m in MEASURES:
                row[m] = repr(100 + 20 * len(word) + rng.gauss(0, 30))
            if holes and rng.random() < 0.15:
                row[rng.choice(["Subtlex_log10", *MEASURES])] = ""
            rows.append(row)
    rows[0]["item"] = ""  # the official file's sentence that starts with "None"
    return rows


def write_csv(path: Path, rows, header=HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for k, row in enumerate(rows):
            w.writerow([str(k) if c == "" else row.get(c, "") for c in header])
    return path


def data_root(tmp_path: Path, rows, header=HEADER) -> Path:
    write_csv(tmp_path / "data" / reading.FILE, rows, header)
    return tmp_path / "data"


# ----------------------------------------------------------------------------- regressions
def statsmodels_fits(frame, smf, dv: str, baseline: list[str]):
    """The official fits with the formula API: baseline with its pairwise products, then
    + pred, each on the rows where its variables are present."""
    terms = baseline + [f"{a}:{b}" for i, a in enumerate(baseline) for b in baseline[i + 1:]]
    base = smf.ols(f"{dv} ~ {' + '.join(terms)}", data=frame[[dv, *baseline]].dropna()).fit()
    model = smf.ols(f"{dv} ~ {' + '.join(terms)} + pred",
                    data=frame[["pred", dv, *baseline]].dropna()).fit()
    return base, model


@pytest.mark.parametrize("n", [60, 25])
def test_regressions_equal_statsmodels(require_extra, n):
    pd, smf = require_extra("babylm", "pandas", "statsmodels.formula.api")
    rng = np.random.default_rng(n)
    numbers = {"Subtlex_log10": rng.uniform(5, 15, n), "length": rng.integers(1, 12, n) * 1.0,
               "context_length": rng.integers(1, 20, n) * 1.0,
               "prev_length": rng.integers(1, 12, n) * 1.0}
    pred = rng.gamma(4.0, 2.0, n)
    prev_pred = rng.gamma(4.0, 2.0, n)
    for m in MEASURES:
        numbers[m] = 150 + 10 * numbers["length"] + 5 * pred + rng.normal(0, 40, n)
    for c in ("Subtlex_log10", *MEASURES):  # holes, different in each column
        numbers[c][rng.choice(n, n // 10, replace=False)] = np.nan
    prev_pred[rng.choice(n, n // 8, replace=False)] = np.nan
    got = reading.regressions(numbers, pred, prev_pred)

    frame = pd.DataFrame({**numbers, "pred": pred, "prev_pred": prev_pred})
    plain = ["Subtlex_log10", "length", "context_length"]
    spill = [*plain, "prev_length", "prev_pred"]
    scores = {}
    for family, baseline, fits in (("plain", plain, got.plain),
                                   ("spillover", spill, got.spillover)):
        for m in MEASURES:
            base, model = statsmodels_fits(frame, smf, m, baseline)
            c = fits[m]
            assert c.base.r2 == pytest.approx(base.rsquared, abs=1e-9)
            assert c.model.r2 == pytest.approx(model.rsquared, abs=1e-9)
            assert c.delta_r2 == pytest.approx(model.rsquared - base.rsquared, abs=1e-9)
            assert c.model.n == model.nobs and c.base.n == base.nobs
            assert c.model.coef == pytest.approx(model.params["pred"], rel=1e-7, abs=1e-9)
            assert c.model.t == pytest.approx(model.tvalues["pred"], rel=1e-7)
            assert c.model.aic == pytest.approx(model.aic, rel=1e-9)
            assert c.base.aic == pytest.approx(base.aic, rel=1e-9)
            rel = (model.rsquared - base.rsquared) / (1 - base.rsquared)
            assert c.rel_delta_r2 == pytest.approx(rel, abs=1e-9)
            scores[family, m] = rel
    eye = sum(scores["plain", m] for m in MEASURES if "RT" in m) / 4
    assert got.eye_tracking == pytest.approx(eye, abs=1e-9)
    assert got.self_paced_reading == pytest.approx(
        scores["spillover", "self_paced_reading_time"], abs=1e-9)
    corr = frame[["pred", *MEASURES]].corr()["pred"]
    for m in MEASURES:
        assert got.corr[m] == pytest.approx(corr[m], abs=1e-12)


def test_eye_tracking_averages_the_four_rt_measures():
    assert reading.EYE_TRACKING == ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")


# ----------------------------------------------------------------------------- the table
def pandas_table(pd, path: Path):
    df = pd.read_csv(path, dtype={"item": str})
    df["item"] = df["item"].fillna("None")
    return df


def assert_same_table(table: reading.ReadingTable, df) -> None:
    assert len(table) == len(df)
    assert table.items == list(df["item"])
    assert table.words == list(df["word"])
    for ours, col in ((table.prev_items, "prev_item"), (table.prev_words, "prev_word")):
        assert ours == [v if isinstance(v, str) else None for v in df[col]]
    for c in reading.NUMBERS:
        assert np.array_equal(table.numbers[c], df[c].to_numpy(dtype=np.float64),
                              equal_nan=True), c


def test_the_table_is_read_as_pandas_reads_it(require_extra, tmp_path):
    (pd,) = require_extra("babylm", "pandas")
    rows = official_rows(1)
    rows[3]["prev_item"] = "None"  # pandas' missing-value text: no previous word
    rows[4]["RTgopast"] = "NA"
    rows[5]["word"] = 'say, "hi"'  # quoting
    rows[6]["N400"] = " 3.5 "
    path = write_csv(tmp_path / "r.csv", rows)
    with path.open("a", encoding="utf-8") as f:
        f.write("\n" + ",".join(["99", "a short", "row"]) + "\n")  # a blank line, a short row
    table = reading.read_table(path)
    assert table.items[0] == "None" and table.prev_items[3] is None
    assert table.where[-1] == f"{path}:{len(rows) + 3}"
    assert_same_table(table, pandas_table(pd, path))


def test_the_official_file_is_read_as_pandas_reads_it(require_extra, data_dir):
    (pd,) = require_extra("babylm", "pandas")
    path = data_dir / reading.FILE
    if not path.exists():
        pytest.skip(f"no {path}")
    table = reading.read_table(path)
    assert len(table) == 1726
    assert_same_table(table, pandas_table(pd, path))


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda h, r: (h[:-1], r), "no column 'prev_length'"),
    (lambda h, r: (h, [*r[:2], {**r[2], "RTgopast": "slow"}]), ":4: column 'RTgopast' holds"),
    (lambda h, r: (h, [*r[:2], {**r[2], "length": "inf"}]), ":4: column 'length' holds"),
    (lambda h, r: (h, [*r[:1], {**r[1], "word": ""}]), ":3: no word"),
    (lambda h, r: (h, [*r[:2], {**r[2], "prev_word": "NA"}]), ":4: prev_item 'the dog'"),
])
def test_bad_tables_are_one_line_errors_naming_file_and_line(tmp_path, edit, expected):
    header, rows = edit(list(HEADER), official_rows(2, holes=False))
    path = write_csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(MinidmlError) as e:
        reading.read_table(path)
    assert str(e.value).startswith(str(path)) and expected in str(e.value)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- surprisal
@torch.no_grad()
def p2_directly(students, omega, tok, sentence: str, word: str) -> float:
    """The official causal rule, literally, with the students called on their own: the
    probability at the last position of BOS + the sentence, then for each further piece
    the first token of its decoded text after the sentence extended by the decoded pieces.
    Several students: each position's probability is their ω-weighted mixture."""

    def p(sentence: str, target: int) -> float:
        ids = torch.tensor([[tok.bos_id, *tok.encode(sentence)]])
        probs = [torch.softmax(s(ids)[0, -1].float(), -1)[target].item() for s in students]
        return sum(float(w) * q for w, q in zip(omega, probs, strict=True))

    pieces = tok.encode(word)
    out = [p(sentence, pieces[0])]
    sentence = sentence + tok.decode([pieces[0]])
    for piece in pieces[1:]:
        text = tok.decode([piece])
        out.append(p(sentence, tok.encode(text)[0]))
        sentence = sentence + text
    return -math.log(float(np.prod(out)))


def test_surprisal_follows_the_official_rule(tiny_run, tmp_path):
    tok = tiny_run.tokenizer
    table = reading.read_table(write_csv(tmp_path / "r.csv", official_rows(3)))
    lengths = [len(tok.encode(w)) for w in table.words]
    assert min(lengths) == 1 and max(lengths) > 2  # single- and multi-piece words
    assert table.items[0] == "None" and table.prev_items[0] is None
    scorer = Scorer(tiny_run.students, tok, tiny_run.omega, batch_size=7)
    got = reading.table_surprisals(scorer, table)
    assert set(got) == {"student-0", "student-1", ENSEMBLE}
    models = {"student-0": ([tiny_run.students[0]], [1.0]),
              "student-1": ([tiny_run.students[1]], [1.0]),
              ENSEMBLE: (tiny_run.students, tiny_run.omega.tolist())}
    for label, (students, omega) in models.items():
        pred, prev_pred = got[label]
        want = [p2_directly(students, omega, tok, s, w)
                for s, w in zip(table.items, table.words, strict=True)]
        np.testing.assert_allclose(pred, want, rtol=2e-5)
        for k, prev in enumerate(table.prev_items):
            if prev is None:
                assert math.isnan(prev_pred[k])
            else:
                assert prev_pred[k] == pytest.approx(
                    p2_directly(students, omega, tok, prev, table.prev_words[k]), rel=2e-5)


def test_later_pieces_are_scored_after_the_decoded_text_not_in_running_text(tiny_run):
    """The quirk: a word's second piece is predicted after the context joined to the first
    piece's text without a space, so p2 differs from the word's probability in its sentence."""
    tok = tiny_run.tokenizer
    word = "chocolate"
    assert len(tok.encode(word)) > 1
    scorer = Scorer(tiny_run.students[:1], tok)
    got = reading.surprisals(scorer, [("Arthur placed the", word)])["student-0"][0]
    running = -float(scorer.score([" " + word], ["Arthur placed the"], [""])["student-0"][0])
    assert got == pytest.approx(p2_directly(tiny_run.students[:1], [1.0], tok,
                                            "Arthur placed the", word), rel=2e-5)
    assert got != pytest.approx(running, rel=1e-3)


# ----------------------------------------------------------------------------- the suite
def test_the_suite_reports_both_scores_for_every_model(tiny_run, tmp_path, available):
    root = data_root(tmp_path, official_rows(4))
    res = evaluate(tiny_run, ["reading"], data_dir=root, available=available,
                   protocol="babylm-2026")
    out = res.outcomes[0]
    assert out.status == "ok", out.error
    table = reading.read_table(root / reading.FILE)
    scorer = Scorer(tiny_run.students, tiny_run.tokenizer, tiny_run.omega)
    surprisal = reading.table_surprisals(scorer, table)
    for label in ("student-0", "student-1", ENSEMBLE):
        eye = out.result.tasks[label]["eye_tracking"]
        spr = out.result.tasks[label]["self_paced_reading"]
        fits = reading.regressions(table.numbers, *surprisal[label])
        assert eye.primary == spr.primary == "rel_delta_r2"
        assert eye.score == pytest.approx(fits.eye_tracking, abs=1e-9)
        assert spr.score == pytest.approx(fits.self_paced_reading, abs=1e-9)
        assert eye.metrics["N400/delta_r2"] == pytest.approx(fits.plain["N400"].delta_r2,
                                                             abs=1e-9)
        assert spr.metrics["self_paced_reading_time/rel_delta_r2"] == spr.score
        rt_rows = [~np.isnan(table.numbers[m]) for m in reading.EYE_TRACKING]
        present = ~np.isnan(table.numbers["Subtlex_log10"])
        assert eye.n == int((np.logical_or.reduce(rt_rows) & present).sum())
        assert spr.n == fits.spillover["self_paced_reading_time"].model.n < len(table)
    assert out.result.groups == {"reading": ("eye_tracking", "self_paced_reading")}
    assert any("ensemble" in n for n in out.result.notes)
    assert "reading" in res.table()

    one = evaluate(tiny_run, ["reading"], student="0", data_dir=root, limit=20,
                   available=available).outcomes[0]
    assert one.result.notes == []
    head = table.head(20)
    fits = reading.regressions(head.numbers, *reading.table_surprisals(
        Scorer(tiny_run.students, tiny_run.tokenizer, labels=["student-0"]), head)["student-0"])
    assert one.result.tasks["student-0"]["eye_tracking"].score == pytest.approx(
        fits.eye_tracking, abs=1e-9)


def test_the_official_file_scores_as_the_official_pipeline_would(tiny_run, data_dir,
                                                                  available, require_extra):
    """Its first rows read by pandas, scored by the rule computed directly and regressed by
    statsmodels as the official script does, against the suite with --limit."""
    pd, smf = require_extra("babylm", "pandas", "statsmodels.formula.api")
    if not (data_dir / reading.FILE).exists():
        pytest.skip(f"no {data_dir / reading.FILE}")
    n = 330  # through the row whose item is missing (read as "None")
    out = evaluate(tiny_run, ["reading"], student="0", data_dir=data_dir, limit=n,
                   available=available).outcomes[0]
    assert out.status == "ok", out.error
    df = pandas_table(pd, data_dir / reading.FILE).head(n).copy()
    one = ([tiny_run.students[0]], [1.0], tiny_run.tokenizer)
    df["pred"] = [p2_directly(*one, s, w) for s, w in zip(df["item"], df["word"], strict=True)]
    df["prev_pred"] = [p2_directly(*one, s, w) if isinstance(s, str) else math.nan
                       for s, w in zip(df["prev_item"], df["prev_word"], strict=True)]
    plain = ["Subtlex_log10", "length", "context_length"]
    rel = {}
    for family, baseline in (("plain", plain), ("spillover", [*plain, "prev_length",
                                                              "prev_pred"])):
        for m in MEASURES:
            base, model = statsmodels_fits(df, smf, m, baseline)
            rel[family, m] = (model.rsquared - base.rsquared) / (1 - base.rsquared)
    tasks = out.result.tasks["student-0"]
    eye = sum(rel["plain", m] for m in MEASURES if "RT" in m) / 4
    assert tasks["eye_tracking"].score == pytest.approx(eye, abs=1e-6)
    assert tasks["self_paced_reading"].score == pytest.approx(
        rel["spillover", "self_paced_reading_time"], abs=1e-6)
    for m in MEASURES:
        assert tasks["eye_tracking"].metrics[f"{m}/rel_delta_r2"] == pytest.approx(
            rel["plain", m], abs=1e-6)
        assert tasks["self_paced_reading"].metrics[f"{m}/rel_delta_r2"] == pytest.approx(
            rel["spillover", m], abs=1e-6)


def test_bad_data_fails_the_suite_with_one_line(tiny_run, tmp_path, available):
    header = [c for c in HEADER if c != "self_paced_reading_time"]
    root = data_root(tmp_path, official_rows(5), header)
    out = evaluate(tiny_run, ["reading"], data_dir=root, available=available).outcomes[0]
    assert out.status == "failed"
    assert out.error.startswith(str(root / reading.FILE))
    assert "'self_paced_reading_time'" in out.error and "\n" not in out.error


def test_the_suites_are_registered_under_the_babylm_protocol_only(tiny_run, tmp_path,
                                                                 available):
    for name, path in (("reading", reading.FILE), ("reading-fast", reading.FAST_FILE)):
        spec = available[name]
        assert spec.requires == (path,) and spec.protocols == ("babylm-2026",)
    root = data_root(tmp_path, official_rows(6))
    with pytest.raises(MinidmlError, match="--protocol babylm-2026"):
        evaluate(tiny_run, ["reading"], data_dir=root, available=available, protocol="lm-eval")
    out = evaluate(tiny_run, ["reading-fast"], data_dir=root, available=available).outcomes[0]
    assert out.status == "unavailable"
