"""Downloads with pinned checksums, against a real HTTP server on 127.0.0.1 serving the data dir."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from minidml.errors import MinidmlError
from minidml.evaluation.fetch import DataFile, fetch, missing, verify
from minidml_plugins._sources import sources

BLIMP3 = ["adjunct_island", "wh_island", "passive_1"]
XZ = "babylm-eval/glue_filtered/multirc.train.jsonl.xz"  # rebuilt locally, so not in sources


@dataclass
class _State:
    root: Path
    mode: str = "ok"  # ok | corrupt | truncate | drop | slow
    requests: list[str] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        state: _State = self.server.state  # type: ignore[attr-defined]
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        state.requests.append(rel)
        state.user_agents.append(self.headers.get("User-Agent", ""))
        if state.mode == "drop":  # close without answering: the client sees a reset
            self.close_connection = True
            return
        if state.mode == "slow":
            time.sleep(0.5)
        file = (state.root / rel).resolve()
        if state.root.resolve() not in file.parents or not file.is_file():
            self.send_error(404, "Not Found")
            return
        data = file.read_bytes()
        if state.mode == "corrupt":
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if state.mode == "truncate":
            data = data[: len(data) // 2]
            self.close_connection = True
        try:
            self.wfile.write(data)
        except ConnectionError:  # the client gave up (its time-out): expected in some tests
            self.close_connection = True

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture(scope="module")
def server(data_dir):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State(root=Path(data_dir))  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def srv(server):
    """The server reset to serving correct bytes, its request log empty; and its base URL."""
    state = server.state
    state.mode = "ok"
    state.requests.clear()
    state.user_agents.clear()
    host, port = server.server_address[:2]
    return state, f"http://{host}:{port}"


def _entry(data_dir: Path, path: str, url: str = "https://example.invalid/x") -> DataFile:
    data = (data_dir / path).read_bytes()
    return DataFile(path, url, hashlib.sha256(data).hexdigest(), len(data))


def _some(data_dir: Path) -> list[DataFile]:
    files = [_entry(data_dir, f"babylm-eval/blimp_filtered/{u}.jsonl") for u in BLIMP3]
    return [*files, _entry(data_dir, XZ)]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_fetch_through_mirror_gives_identical_files(srv, data_dir, tmp_path):
    state, base = srv
    files = _some(data_dir)
    assert missing(files, tmp_path) == files
    written = fetch(files, tmp_path, mirror=base + "/")
    assert written == [tmp_path / f.path for f in files]
    for f in files:
        assert (tmp_path / f.path).read_bytes() == (data_dir / f.path).read_bytes()
    assert missing(files, tmp_path) == []
    assert verify(files, tmp_path) == []
    assert sorted(state.requests) == sorted(f.path for f in files)
    assert all(ua.startswith("minidml/") for ua in state.user_agents)
    # no temporary files beside the results
    assert _leftovers(tmp_path / "babylm-eval/blimp_filtered") == sorted(
        f"{u}.jsonl" for u in BLIMP3
    )


def test_present_files_are_not_downloaded_again(srv, data_dir, tmp_path):
    state, base = srv
    files = _some(data_dir)
    fetch(files[:2], tmp_path, mirror=base)
    assert len(state.requests) == 2
    state.requests.clear()
    assert fetch(files, tmp_path, mirror=base) == [tmp_path / f.path for f in files[2:]]
    assert sorted(state.requests) == sorted(f.path for f in files[2:])
    state.requests.clear()
    assert fetch(files, tmp_path, mirror=base) == []
    assert state.requests == []
    assert len(fetch(files[:1], tmp_path, mirror=base, force=True)) == 1
    assert state.requests == [files[0].path]


def test_wrong_local_file_is_reported_and_replaced(srv, data_dir, tmp_path):
    state, base = srv
    files = _some(data_dir)[:2]
    fetch(files, tmp_path, mirror=base)
    bad = tmp_path / files[1].path
    data = bytearray(bad.read_bytes())
    data[10] ^= 0x20
    bad.write_bytes(bytes(data))
    problems = verify(files, tmp_path)
    assert len(problems) == 1 and problems[0].startswith(files[1].path)
    assert "sha256" in problems[0]
    (tmp_path / files[0].path).unlink()
    assert len(verify(files, tmp_path)) == 2
    assert "missing" in verify(files, tmp_path)[0]
    state.requests.clear()
    fetch(files, tmp_path, mirror=base)
    assert sorted(state.requests) == sorted(f.path for f in files)
    assert verify(files, tmp_path) == []


def test_pinned_url_is_used_without_mirror(srv, data_dir, tmp_path):
    state, base = srv
    src = "blimp/wh_island.jsonl"
    f = _entry(data_dir, src, url=f"{base}/{src}")
    f = DataFile("elsewhere/wh.jsonl", f.url, f.sha256)  # no size: Content-Length is checked
    assert fetch([f], tmp_path) == [tmp_path / "elsewhere/wh.jsonl"]
    assert state.requests == [src]
    assert (tmp_path / f.path).read_bytes() == (data_dir / src).read_bytes()


def test_file_url_mirror(data_dir, tmp_path):
    files = _some(data_dir)[:1]
    fetch(files, tmp_path, mirror=Path(data_dir).resolve().as_uri())
    assert verify(files, tmp_path) == []


def test_a_mirror_that_is_a_path_or_lacks_a_file_is_one_line(data_dir, tmp_path):
    files = _some(data_dir)[:1]
    with pytest.raises(MinidmlError) as excinfo:  # a plain path: the file:// URL to give
        fetch(files, tmp_path, mirror=str(data_dir))
    _assert_one_line_error(excinfo, f"--mirror {data_dir}: not a URL",
                           f"file://{Path(data_dir).resolve()}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MinidmlError) as excinfo:
        fetch(files, tmp_path / "root", mirror=empty.as_uri())
    _assert_one_line_error(excinfo, files[0].path, "no such file", "the mirror lacks it")
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").rglob("*.jsonl"))


def _assert_one_line_error(excinfo, *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize("keep_old", [False, True])
def test_corrupted_download_leaves_nothing(srv, data_dir, tmp_path, keep_old):
    state, base = srv
    f = _some(data_dir)[0]
    dest = tmp_path / f.path
    if keep_old:  # a wrong file is already there: it stays as it was
        dest.parent.mkdir(parents=True)
        dest.write_bytes(b"old")
    state.mode = "corrupt"
    with pytest.raises(MinidmlError) as excinfo:
        fetch([f], tmp_path, mirror=base)
    _assert_one_line_error(excinfo, f.path, f.sha256[:12], "--mirror")
    assert _leftovers(dest.parent) == (["adjunct_island.jsonl"] if keep_old else [])
    if keep_old:
        assert dest.read_bytes() == b"old"


@pytest.mark.parametrize("with_size", [True, False])
def test_truncated_download_leaves_nothing(srv, data_dir, tmp_path, with_size):
    state, base = srv
    f = _some(data_dir)[3]
    if not with_size:  # then the server's Content-Length is what catches it
        f = DataFile(f.path, f.url, f.sha256)
    state.mode = "truncate"
    with pytest.raises(MinidmlError) as excinfo:
        fetch([f], tmp_path, mirror=base)
    _assert_one_line_error(excinfo, f.path, "truncated")
    assert _leftovers(tmp_path / "babylm-eval/glue_filtered") == []
    assert missing([f], tmp_path) == [f]


def test_404_names_the_url(srv, data_dir, tmp_path):
    state, base = srv
    f = DataFile("blimp/no_such_paradigm.jsonl", f"{base}/blimp/no_such_paradigm.jsonl", "0" * 64)
    with pytest.raises(MinidmlError) as excinfo:
        fetch([f], tmp_path)
    _assert_one_line_error(excinfo, f.url, "HTTP 404")
    assert not (tmp_path / "blimp").exists()


@pytest.mark.parametrize("mode", ["drop", "slow"])
def test_network_failures_are_one_line(srv, data_dir, tmp_path, mode):
    state, base = srv
    f = _some(data_dir)[0]
    state.mode = mode
    with pytest.raises(MinidmlError) as excinfo:
        fetch([f], tmp_path, mirror=base, timeout=0.1)
    _assert_one_line_error(excinfo, base + "/" + f.path)
    if mode == "slow":
        _assert_one_line_error(excinfo, "0.1 s")
    assert missing([f], tmp_path) == [f]


def test_bad_entries_are_refused():
    with pytest.raises(ValueError):
        DataFile("../etc/passwd", "https://x", "0" * 64)
    with pytest.raises(ValueError):
        DataFile("/abs", "https://x", "0" * 64)
    with pytest.raises(ValueError):
        DataFile("a.jsonl", "https://x", "abc")


_URL = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+")
# files under the data dir that have no public copy: training text, and rebuilt GLUE train sets
_UNLISTED = re.compile(
    r"babylm-10M/.*|babylm-2024-100M-snippets/.*"
    r"|babylm-eval/glue_filtered/(sst2\.train\.jsonl|multirc\.train\.jsonl\.xz)"
)


def test_sources_table_matches_the_data(data_dir):
    rows = sources()
    assert len({f.path for f in rows}) == len(rows)
    assert len(sources("babylm-eval/blimp_filtered/")) == 67
    assert len(sources("blimp/")) == 67
    assert len(sources("babylm-eval/supplement_filtered/")) == 5
    assert len(sources("babylm-eval/ewok_filtered/")) == 11
    assert len(sources("blimp/", "babylm-eval/ewok_filtered/")) == 78
    assert sources("babylm-eval/blimp_filtered/") is not sources("blimp/")
    with open(Path(data_dir) / "MANIFEST.tsv", newline="") as fh:
        manifest = {r["path"] for r in csv.DictReader(fh, delimiter="\t")}
    unlisted = manifest - {f.path for f in rows}
    assert all(_UNLISTED.fullmatch(p) for p in unlisted), unlisted
    for f in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
        assert _URL.fullmatch(f.url), f
        if f.path != "babylm-eval/ewok_vocab.txt":  # the one file renamed (from ewok/vocab.txt)
            assert f.url.endswith("/" + urllib.parse.quote(f.path.rsplit("/", 1)[-1])), f
    assert verify(rows, data_dir) == []  # hashes every listed file (~90 MB)


def test_cli_fetches_a_suite_from_a_mirror_and_evaluates_with_it(srv, data_dir, tmp_path,
                                                                   tiny_run):
    """`minidml data fetch ewok --mirror URL` fills a data root that `minidml eval` uses;
    a second fetch downloads nothing."""
    from minidml.cli.commands import main

    state, base = srv
    root = tmp_path / "root"

    def run(*args):
        try:
            main(list(args))
        except SystemExit as e:
            return e.code
        return 0

    assert run("data", "fetch", "ewok", "--data-dir", str(root), "--mirror", base, "-q") == 0
    assert len(state.requests) == 11
    for f in (data_dir / "babylm-eval" / "ewok_filtered").glob("*.jsonl"):
        assert (root / "babylm-eval" / "ewok_filtered" / f.name).read_bytes() == f.read_bytes()
    state.requests.clear()
    assert run("data", "fetch", "ewok", "--data-dir", str(root), "--mirror", base, "-q") == 0
    assert state.requests == []
    out = tmp_path / "r.json"
    assert run("eval", str(tiny_run.path), "--suite", "ewok", "--data-dir", str(root),
               "--limit", "3", "--output", str(out), "-q") in (None, 0)
    assert json.loads(out.read_text())["suites"]["ewok"]["status"] == "ok"
