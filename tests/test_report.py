"""The HTML report: one video per (prompt, seed) x run, relative links, escaping, placeholders,
the CLI command, and the page in a real headless browser (Debian chromium).

The fixture results folder (benchmark "bench"; columns vanilla/gA, cvg/gA, external/folder):

==========  ===============  ===============  =====================
row         vanilla/gA       cvg/gA           external/folder
==========  ===============  ===============  =====================
p1 seed 0   video            video            video (absolute path)
p1 seed 1   video            video            -
p2 seed 0   no video saved   video            -
p2 seed 1   -                error record     -
==========  ===============  ===============  =====================

so 6 video elements, one "failed" placeholder, one "no video saved", four "no sample".
p1's prompt holds a ``<script>`` tag that must stay text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import imageio.v2 as iio
import numpy as np
import pytest

from cvg_bench.records import RunStore
from cvg_bench.report import write_report
from cvg_bench.video_io import write_mp4

EVIL = 'a red circle <script>alert("x")</script> & "quotes"'
PROMPTS = {"p1": (EVIL, "spatial"), "p2": ("two blue squares", "count")}
N_VIDEOS = 6
FRAMES, H, W = 6, 24, 32


def _video(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    video = np.zeros((FRAMES, H, W, 3), np.uint8)
    video[:] = rng.integers(0, 255, 3, dtype=np.uint8)  # a colour per video
    for t in range(FRAMES):  # a moving white square, so frames differ
        video[t, 8:16, 4 * t:4 * t + 8] = 255
    return video


def _rec(method: str, generator: str, prompt_id: str, seed: int, video_path: str | None,
         error: str | None = None) -> dict:
    prompt, category = PROMPTS[prompt_id]
    ok = error is None
    return {
        "schema_version": 1, "run_hash": "h" + method, "method": method, "generator": generator,
        "benchmark": "bench", "benchmark_version": "1", "prompt_id": prompt_id,
        "prompt": prompt, "category": category, "split": "seen", "seed": seed,
        "video_path": video_path,
        "scores": {"oracle/pass": 1.0, "oracle/validity": 0.5} if ok else {},
        "scores_norm": {"oracle/pass": 1.0, "oracle/validity": 0.5} if ok else {},
        "faithfulness": 0.75 if ok else None, "quality": None,
        "details": {"oracle": {"left_of": {"passed": True, "score": 1.0, "value": 1.0},
                               "<b>bold</b>": {"passed": False, "score": 0.0, "value": 0.0}}}
        if ok else {},
        "timings": {"generation_s": 1.5, "guidance_s": 0.0, "scoring_s": 0.1},
        "evaluators": {}, "versions": {}, "git_commit": "abc",
        "created_at": "2026-01-01T00:00:00+00:00", "error": error,
    }


def _write(root: Path, rec: dict, video: np.ndarray | None = None) -> None:
    store = RunStore(root, rec["benchmark"], rec["method"], rec["generator"], rec["run_hash"])
    if video is not None and rec["video_path"] and not Path(rec["video_path"]).is_absolute():
        write_mp4(store.root / rec["video_path"], video)
    if rec["video_path"] and Path(rec["video_path"]).is_absolute():  # as `score` writes it
        store.write_manifest({"identity": {"videos": str(Path(rec["video_path"]).parent)}})
    store.write(rec)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results") / "sweep"
    for i, (method, pid, seed) in enumerate([("vanilla", "p1", 0), ("vanilla", "p1", 1),
                                             ("cvg", "p1", 0), ("cvg", "p1", 1),
                                             ("cvg", "p2", 0)]):
        _write(root, _rec(method, "gA", pid, seed, f"videos/{pid}__s{seed}.mp4"), _video(i))
    _write(root, _rec("vanilla", "gA", "p2", 0, None))  # save_videos=false
    _write(root, _rec("cvg", "gA", "p2", 1, None, error="RuntimeError: <boom>\ntraceback..."))
    external = write_mp4(root.parent / "external_videos" / "p1.mp4", _video(9))
    _write(root, _rec("external", "folder", "p1", 0, str(external.resolve())))
    return root


class _Videos(HTMLParser):
    """Collects the attributes of every <video> and the class of every <td>."""

    def __init__(self) -> None:
        super().__init__()
        self.videos: list[dict[str, str | None]] = []
        self.td_classes: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "video":
            self.videos.append(dict(attrs))
        elif tag == "td":
            self.td_classes.append(dict(attrs).get("class") or "")
        elif tag == "script":
            self.scripts += 1


def _parse(text: str) -> _Videos:
    parser = _Videos()
    parser.feed(text)
    return parser


def _local(page: Path, url: str) -> Path:
    """The file a (relative or file://) URL in ``page`` points at."""
    parsed = urlparse(url)
    path = Path(unquote(parsed.path))
    return path if parsed.scheme == "file" else page.parent / path


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    return write_report([results], tmp_path_factory.mktemp("report") / "out")


def test_one_video_per_cell_with_poster_and_scores(report):
    page = report.parent / "bench.html"
    assert report.name == "index.html" and 'href="bench.html"' in report.read_text()
    parsed = _parse(page.read_text())
    assert len(parsed.videos) == N_VIDEOS
    for video in parsed.videos:
        assert {"controls", "muted", "loop", "playsinline"} <= set(video)
        assert _local(page, video["src"]).is_file() and video["src"].startswith("media/")
        poster = iio.imread(_local(page, video["poster"]))
        assert poster.shape[:2] == (H, W)
    classes = parsed.td_classes
    assert classes.count("cell") == N_VIDEOS and classes.count("cell error") == 1
    assert classes.count("cell novideo") == 1 and classes.count("cell missing") == 4
    text = page.read_text()
    assert "faithfulness 0.750" in text and "validity 0.500" in text and "pass 1.000" in text
    assert "✓ left_of" in text and "1.50 s/video" in text


def test_text_is_escaped(report):
    text = (report.parent / "bench.html").read_text()
    assert _parse(text).scripts == 0 and "<script" not in text and "<b>bold" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in text
    assert "failed: RuntimeError: &lt;boom&gt;" in text and "traceback" not in text


def test_folder_moves_with_its_links(report, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(report.parent, moved)
    page = moved / "bench.html"
    for video in _parse(page.read_text()).videos:
        for url in (video["src"], video["poster"]):
            target = _local(page, url)
            assert target.is_file() and moved in target.resolve().parents


def test_selection_and_rerun(results, tmp_path):
    out = tmp_path / "out"
    write_report(results, out, seeds=[0], methods=["cvg", "vanilla"], limit=1)
    text = (out / "bench.html").read_text()
    assert text.index("cvg<br>gA") < text.index("vanilla<br>gA") and "external" not in text
    # seed 0 of p1 (the first spatial prompt) and p2 (the first count prompt), two methods,
    # p2/vanilla without a saved video: 3 videos
    assert len(_parse(text).videos) == 3 and 'data-seed="1"' not in text
    write_report(results, out, seeds=[0], methods=["cvg", "vanilla"], limit=1)  # idempotent
    assert len(_parse((out / "bench.html").read_text()).videos) == 3


def test_missing_video_and_bad_input(results, tmp_path):
    with pytest.raises(FileNotFoundError, match="results folder"):
        write_report([tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(ValueError, match="no records left"):
        write_report(results, tmp_path / "out", seeds=[7])
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    gone = next(copy.rglob("videos/p1__s0.mp4"))
    gone.unlink()
    text = write_report(copy, tmp_path / "out2").with_name("bench.html").read_text()
    assert len(_parse(text).videos) == N_VIDEOS - 1 and "video not found: videos/p1__s0.mp4" in text


def test_cli_report_and_its_errors(results, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cvg_bench", "report", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=180)

    out = cli(f"results_dirs=[{results}]", f"out_dir={tmp_path / 'rep'}", "seeds=[0,1]")
    assert out.returncode == 0, out.stderr
    assert len(_parse((tmp_path / "rep" / "bench.html").read_text()).videos) == N_VIDEOS
    bad = cli(f"results_dirs=[{tmp_path / 'nope'}]")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "results folder(s) not found" in bad.stderr


# ---------------------------------------------------------------------------------------------
# A real browser

WINDOW = (1280, 900)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not on PATH: .ci/run should have installed it "
                        "(apt-get install -y chromium) before the tests")
        pytest.skip("chromium is not installed; for the browser test: apt-get install -y chromium")
    return exe


def _headless(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI and this machine run as root; a fresh profile per call, no state.
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--mute-audio", f"--user-data-dir={profile}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}"
    return out


def test_report_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    page = report.parent / "bench.html"
    url = page.resolve().as_uri()
    dom = _headless(exe, tmp_path / "profile1", "--dump-dom", url).stdout
    parsed = _parse(dom)
    assert len(parsed.videos) == N_VIDEOS and dom.count("<video") == N_VIDEOS
    assert parsed.scripts == 0 and "&lt;script&gt;" in dom  # the prompt stayed text
    for video in parsed.videos:
        assert _local(page, video["src"]).is_file() and _local(page, video["poster"]).is_file()

    shot = tmp_path / "report.png"
    _headless(exe, tmp_path / "profile2", f"--screenshot={shot}",
              f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", url)
    assert shot.is_file() and shot.stat().st_size > 1024
    image = iio.imread(shot)
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    assert image[..., :3].std() > 5  # a rendered page, not a blank canvas
    if os.environ.get("CVG_REPORT_SCREENSHOT_DIR"):
        keep = Path(os.environ["CVG_REPORT_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, keep / "report_bench.png")


def test_benchmark_page_shows_a_contact_sheet(report):
    """A PNG of each run's frames beside the table: one column per run, one row per (prompt, seed)."""
    from PIL import Image

    sheet = report.parent / "bench_contact_sheet.png"
    page = (report.parent / "bench.html").read_text()
    assert sheet.is_file() and 'src="bench_contact_sheet.png"' in page
    width, height = Image.open(sheet).size
    assert width > 2 * 100 and height > 3 * 16  # 2 runs (vanilla, cvg) x 3 (prompt, seed) rows


def test_the_page_names_results_under_the_working_directory_relatively(tmp_path, monkeypatch):
    from cvg_bench.report import _shown, _stamp

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "results" / "runs" / "shapes"
    assert _shown(inside) == "results/runs/shapes" and _shown("results/x") == "results/x"
    assert _shown("/elsewhere/runs") == "/elsewhere/runs"
    assert str(tmp_path) not in _stamp([inside])
