"""Suites are pluggy plugins: entry points of other packages, built-ins, blocking, failures."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minidml.errors import MinidmlError
from minidml.evaluation import hookspecs
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.plugins import BLOCK_ENV, DEFAULT_PLUGINS, make_manager, suites
from minidml.evaluation.runner import evaluate, require_suites

REPO = Path(__file__).resolve().parent.parent

THIRD_PARTY = '''
from minidml.evaluation.suite import Pair, score_pairs
from minidml.evaluation.hookspecs import hookimpl


class Echo:
    def evaluate(self, ctx):
        good, bad = "The dog sleeps .", "dog The . sleeps"
        return score_pairs(ctx, {"word-order": [Pair(good, bad)] * 3})


class Boom:
    def evaluate(self, ctx):
        raise RuntimeError("kaboom")


@hookimpl
def register_suites(register):
    register("echo", Echo, description="a third-party suite", version="2")
    register("boom", Boom, description="a suite that always fails")
'''


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> Path:
    """An installed-looking package: a module plus a dist-info with a minidml entry point."""
    root = tmp_path_factory.mktemp("site")
    (root / "thirdparty_suites").mkdir()
    (root / "thirdparty_suites" / "__init__.py").write_text(THIRD_PARTY)
    info = root / "thirdparty_suites-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-suites\n"
                                   "Version: 0.3\n")
    (info / "entry_points.txt").write_text("[minidml]\nthirdparty = thirdparty_suites\n")
    return root


def cli(*args: str, site: Path | None = None, cwd: Path | None = None, **env: str
        ) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    if site is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(site), environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "minidml", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, env=environ, timeout=300)


def test_builtin_suites_are_registered_by_minidml(data_dir):
    found = suites(make_manager(entry_points=False))
    assert {"agreement", "blimp", "blimp-full", "blimp-supplement", "ewok", "glue",
            "blimp-fast", "supplement-fast", "ewok-fast", "entity-tracking",
            "entity-tracking-fast", "wug-adj", "wug-adj-fast", "wug-past", "wug-past-fast",
            "comps", "reading", "reading-fast", "aoa"} <= set(found)
    only_2026 = {n for n, s in found.items() if s.protocols == ("babylm-2026",)}
    assert only_2026 == {"entity-tracking", "entity-tracking-fast", "wug-adj", "wug-adj-fast",
                         "wug-past", "wug-past-fast", "comps", "reading", "reading-fast", "aoa"}
    for spec in found.values():
        assert spec.package == "minidml" and spec.plugin.startswith("minidml_plugins.")
        assert spec.description
    assert found["blimp"].data_present(data_dir) and found["ewok"].data_present(data_dir)
    assert found["blimp"].sources and not found["agreement"].sources


def test_a_third_party_package_is_listed_and_runs(third_party, tiny_run, tmp_path):
    listing = cli("suites", site=third_party)
    assert listing.returncode == 0, listing.stderr
    line = next(ln for ln in listing.stdout.splitlines() if ln.startswith("echo "))
    assert "thirdparty-suites 0.3" in line and "a third-party suite" in line
    out = tmp_path / "results.json"
    run = cli("eval", str(tiny_run.path), "--suite", "echo", "--suite", "agreement",
              "--limit", "5", "--output", str(out), "--log-samples", site=third_party)
    assert run.returncode == 0, run.stderr
    samples = [json.loads(line) for line in
               (tmp_path / "results.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 + 5 * 5  # echo's 3 pairs, 5 of each agreement phenomenon
    echo = [r for r in samples if r["suite"] == "echo"]
    assert [r["index"] for r in echo] == [0, 1, 2] and echo[0]["good"] == "The dog sleeps ."
    for r in samples:
        assert set(r["loglikelihoods"]) == {"student-0", "student-1", "ensemble"}
        assert all(len(v) == 2 and v[0] < 0 and v[1] < 0 for v in r["loglikelihoods"].values())
    assert "word-order" in run.stdout and "determiner_noun_agreement" in run.stdout
    results = json.loads(out.read_text())
    assert results["suites"]["echo"]["package"] == "thirdparty-suites"
    assert results["suites"]["echo"]["version"] == "2+babylm-2026"
    for label in ("student-0", "student-1", "ensemble"):
        assert results["results"][label]["echo/word-order"]["n"] == 3
        assert results["results"][label]["agreement/subject_verb_agreement"]["n"] == 5


def test_a_failing_suite_does_not_stop_the_others(third_party, tiny_run, tmp_path):
    out = tmp_path / "results.json"
    run = cli("eval", str(tiny_run.path), "--suite", "boom", "--suite", "echo", "--output",
              str(out), site=third_party)
    assert run.returncode == 1
    assert "RuntimeError: kaboom" in run.stderr and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: suite(s) boom")
    results = json.loads(out.read_text())
    assert results["suites"]["boom"]["status"] == "failed"
    assert results["suites"]["echo"]["status"] == "ok"


def test_blocked_plugins_are_not_loaded(third_party, monkeypatch):
    listing = cli("suites", site=third_party, **{BLOCK_ENV: "thirdparty,ewok"})
    assert listing.returncode == 0, listing.stderr
    names = {ln.split()[0] for ln in listing.stdout.splitlines()[1:-1]}
    assert "echo" not in names and "ewok" not in names and "blimp" in names
    monkeypatch.setenv(BLOCK_ENV, "glue")
    assert "glue" not in suites(make_manager(entry_points=False))


def test_a_misspelt_hook_is_caught():
    class Typo:
        @hookimpl
        def register_suite(self, register):  # not a hook: register_suites
            pass

    with pytest.raises(MinidmlError, match="register_suite"):
        make_manager(builtins=(), entry_points=False, extra=[Typo()])


def test_two_plugins_cannot_register_the_same_suite():
    class Again:
        @hookimpl
        def register_suites(self, register):
            register("agreement", object, description="a clash")

    pm = make_manager(builtins=("agreement",), entry_points=False, extra=[Again()])
    with pytest.raises(MinidmlError, match="registered by both"):
        suites(pm)


def test_a_plugin_that_fails_to_load_is_named_and_can_be_blocked(tmp_path):
    """An installed plugin whose import fails: one line naming it and its package, and the
    block the line gives works."""
    site = tmp_path / "site"
    (site / "broken_suites").mkdir(parents=True)
    (site / "broken_suites" / "__init__.py").write_text("import no_such_dependency\n")
    info = site / "broken_suites-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-suites\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[minidml]\nbroken = broken_suites\n")
    listing = cli("suites", site=site)
    lines = listing.stderr.strip().splitlines()
    assert listing.returncode == 1 and len(lines) == 1, listing.stderr
    assert "plugin broken (package broken-suites) failed to load" in lines[0]
    assert "no_such_dependency" in lines[0] and f"{BLOCK_ENV}=broken" in lines[0]
    listing = cli("suites", site=site, **{BLOCK_ENV: "broken"})
    assert listing.returncode == 0, listing.stderr


@pytest.mark.parametrize("body, needle", [
    ("raise RuntimeError('boom')", "its register_suites failed (RuntimeError: boom)"),
    ("register('x', object)", "its register_suites failed (TypeError"),
    ("register('x', object, description='d', requires='data/x.jsonl')",
     "suite 'x''s requires must be a list of strings"),
    ("register('x', object, description='d', sources=['data/x.jsonl'])",
     "suite 'x''s sources must be DataFile objects"),
])
def test_a_plugin_s_mistake_in_registering_is_one_line_naming_it(body, needle):
    namespace: dict = {}
    exec(f"def register_suites(self, register):\n    {body}\n", namespace)

    class Faulty:
        register_suites = hookimpl(namespace["register_suites"])

    pm = make_manager(builtins=(), entry_points=False, extra=[Faulty()])
    with pytest.raises(MinidmlError) as err:
        suites(pm)
    assert needle in str(err.value) and BLOCK_ENV in str(err.value)
    assert "\n" not in str(err.value)


def test_a_hook_that_takes_no_register_is_called_without_it():
    called = []

    class Quiet:
        @hookimpl
        def register_suites(self):
            called.append(True)

    pm = make_manager(builtins=("agreement",), entry_points=False, extra=[Quiet()])
    assert "agreement" in suites(pm) and called == [True]


def test_every_hook_is_documented_in_the_plugin_guide_with_its_signature():
    readme = (REPO / "docs" / "plugins.md").read_text()
    hooks = [(n, f) for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, "minidml_spec")]
    assert hooks
    for name, fn in hooks:
        params = ", ".join(inspect.signature(fn).parameters)
        assert f"{name}({params})" in readme, name


def test_missing_data_is_unavailable_and_all_runs_what_is_present(tiny_run, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    res = evaluate(tiny_run, ["blimp", "agreement"], data_dir=empty, limit=4)
    status = {o.spec.name: o for o in res.outcomes}
    assert status["blimp"].status == "unavailable" and not res.ok
    assert "minidml data fetch blimp" in status["blimp"].error
    assert status["agreement"].status == "ok"
    res = evaluate(tiny_run, ["all"], data_dir=empty, limit=4)
    assert [o.spec.name for o in res.outcomes] == ["agreement"] and res.ok
    with pytest.raises(MinidmlError, match="no such suite"):
        evaluate(tiny_run, ["blimpp"], data_dir=empty)


def test_suites_needed_later_are_checked_before_any_work(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert require_suites(["agreement", "all"], empty) == ["agreement"]  # built in: no data
    with pytest.raises(MinidmlError, match=r"^--suites blimp: its data is not in .*nothing"
                                           r".*minidml data fetch blimp"):
        require_suites(["agreement", "blimp"], empty, option="--suites")
    with pytest.raises(MinidmlError, match="--suites blimpp: no such suite"):
        require_suites(["blimpp"], empty, option="--suites")
    with pytest.raises(MinidmlError, match="no suite given; pass --suites NAME"):
        require_suites([], empty, option="--suites")


def test_named_groups_take_the_suites_whose_data_is_here(tmp_path):
    data = os.environ.get("MINIDML_DATA_DIR")
    if not data:
        pytest.skip("needs the shared data (MINIDML_DATA_DIR)")
    fast = require_suites(["babylm-fast"], data)
    assert fast and all(n.endswith("-fast") for n in fast) and "blimp-fast" in fast
    assert set(fast) == {n for n, s in suites().items()
                         if n.endswith("-fast") and s.data_present(Path(data))}
    full = require_suites(["babylm-2026"], data)
    assert {"blimp", "blimp-supplement", "ewok", "entity-tracking", "reading"} <= set(full)
    assert not any(n.endswith("-fast") for n in full)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(MinidmlError, match="--suite babylm-fast: none of its suites"):
        require_suites(["babylm-fast"], empty)


def test_eval_without_any_run_says_how_to_train_one(tmp_path):
    run = cli("eval", "--suite", "agreement", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "minidml train" in run.stderr


def test_default_plugins_are_all_importable():
    pm = make_manager(entry_points=False)
    assert {pm.get_name(p) for p in pm.get_plugins()} >= {f"minidml_plugins.{n}"
                                                           for n in DEFAULT_PLUGINS}


def test_plugin_guide_example_is_a_working_plugin(tmp_path):
    """The plugin guide's example is code that registers a suite."""
    readme = (REPO / "docs" / "plugins.md").read_text()
    start = readme.index("```python\n# my_suites.py")
    code = readme[start + len("```python\n"):readme.index("```", start + 10)]
    namespace: dict = {}
    exec(compile(textwrap.dedent(code), "docs/plugins.md", "exec"), namespace)
    found = suites(make_manager(builtins=(), entry_points=False,
                                extra=[type("P", (), {"register_suites": staticmethod(
                                    namespace["register_suites"])})()]))
    assert found


def test_eval_without_a_run_takes_the_latest_and_says_so(tiny_run, tmp_path):
    import shutil

    shutil.copytree(tiny_run.path, tmp_path / "runs" / "grammar-1")
    out = tmp_path / "r.json"
    run = cli("eval", "--suite", "agreement", "--limit", "2", "--output", str(out),
              cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "using the latest run: runs/grammar-1" in run.stderr
    assert json.loads(out.read_text())["run"] == "runs/grammar-1"


def test_the_suite_api_moved_from_evaluation_with_a_warning():
    """Plugins written when the suite API lived in minidml.evaluation still load."""
    import minidml.evaluation as evaluation
    import minidml.evaluation.suite as suite

    with pytest.warns(DeprecationWarning, match="minidml.evaluation.suite.Pair"):
        assert evaluation.Pair is suite.Pair
    with pytest.warns(DeprecationWarning, match="minidml.evaluation.suite.score_pairs"):
        from minidml.evaluation import score_pairs
    assert score_pairs is suite.score_pairs
    with pytest.raises(AttributeError):
        evaluation.no_such_name  # noqa: B018


def test_a_data_root_that_does_not_exist_is_an_error_not_an_empty_root(tiny_run, tmp_path,
                                                                       monkeypatch):
    """`--suite all --data-dir /typo` would otherwise run only the suites needing no data."""
    typo = tmp_path / "typo"
    with pytest.raises(MinidmlError, match=r"^--data-dir .*typo: no such directory"):
        evaluate(tiny_run, ["all"], data_dir=typo, limit=4)
    with pytest.raises(MinidmlError, match="--data-dir"):
        require_suites(["agreement"], typo)
    monkeypatch.setenv("MINIDML_DATA_DIR", str(typo))
    with pytest.raises(MinidmlError, match=r"^\$MINIDML_DATA_DIR=.*typo: no such directory"):
        evaluate(tiny_run, ["agreement"], limit=4)
    run = cli("eval", str(tiny_run.path), "--suite", "all", "--data-dir", str(typo))
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "--data-dir" in run.stderr


def test_results_of_the_same_second_never_replace_each_other(tiny_run, tmp_path):
    res = evaluate(tiny_run, ["agreement"], limit=4)
    target = tmp_path / "eval" / "results-step4-20261206T000000.json"
    first, second = res.write(target, unique=True), res.write(target, unique=True)
    assert first == target and second == target.with_name(target.stem + "-2.json")
    assert json.loads(first.read_text()) == json.loads(second.read_text())
    assert {p.name for p in target.parent.iterdir()} == {first.name, second.name}
    assert res.write(target) == target  # a name the user chose is theirs to replace
