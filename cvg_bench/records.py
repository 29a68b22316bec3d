"""The results store: one JSON record per sample, written atomically, resumable.

Layout under ``results_dir``::

    <benchmark>/<method>__<generator>__<run_hash>/
        manifest.json                 # the run: resolved config, versions, git commit
        samples/<prompt_id>__s<seed>.json   # one SampleRecord per finished sample
        videos/<prompt_id>__s<seed>.mp4

        locks/<prompt_id>__s<seed>.lock     # who is making that sample now (pid, host)
        invalid/<file>.<time>.json    # records that failed validation, moved aside (never deleted)

One file per sample (not one appended JSONL) so that SLURM array tasks and a killed run
never share a half-written file: a record exists completely or not at all.

Trust rules, stated once here and used by every reader and writer:

* names: a run hash, and an id used as a file name as is (``score``'s ``<id>.mp4``), must be a
  safe name (``SAFE_NAME_RULE``); other ids go through ``safe_name``, whose output obeys it too.
* paths: every path read or written is resolved (symlinks followed) and must stay under its
  root (``confined``), otherwise ``PathEscape`` names the path and the root.
* records: ``validate_record`` checks every field of a ``SampleRecord`` (exact types, scores
  finite or NaN = "not scored", normalised scores in [0, 1]); ``read_records`` yields only valid
  records and names every file it refused.
* done: a sample is done when its record is valid, error-free, about that sample, and its video
  (if it has one) is present with the size and sha256 the record stores (``RunStore.check_done``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, NotRequired, TypedDict

log = logging.getLogger(__name__)

#: Version 2 added ``video_size`` and ``video_sha256``; version 1 records are still read.
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)


class Timings(TypedDict):
    generation_s: float  # whole sampling call, guidance included
    guidance_s: float  # time inside guidance hooks (part of generation_s)
    scoring_s: NotRequired[float]


class SampleRecord(TypedDict):
    """One (run config hash, method, generator, benchmark, prompt id, seed) sample."""

    schema_version: int
    run_hash: str
    method: str
    generator: str
    benchmark: str
    benchmark_version: str
    prompt_id: str
    prompt: str
    category: str
    split: str
    seed: int
    video_path: str | None  # relative to the run directory (absolute for `score` records)
    video_size: NotRequired[int | None]  # bytes of that video (schema 2; None without a video)
    video_sha256: NotRequired[str | None]  # sha256 hex of that video (schema 2)
    scores: dict[str, float]  # raw, "<scorer>/<metric>"
    scores_norm: dict[str, float]  # normalised to [0, 1], higher is better
    faithfulness: float | None  # the faithfulness scorer's primary normalised metric
    quality: float | None  # the quality scorer's primary normalised metric (None if none ran)
    details: dict[str, Any]  # per-scorer per-predicate details
    timings: Timings
    evaluators: dict[str, str]  # scorer name -> evaluator identity/version
    versions: dict[str, str]
    git_commit: str
    created_at: str
    error: str | None


def config_hash(cfg: dict[str, Any], length: int = 10) -> str:
    """Stable hash of the config parts that change what a sample is."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


# ---------------------------------------------------------------------------------------------
# Names and paths

#: The one rule for a name that becomes a file or folder name as is.
SAFE_NAME_RULE = ("1-120 characters from A-Z a-z 0-9 . _ -, the first a letter or digit "
                  "(so no '/', no '..', no spaces)")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafeName(ValueError):
    """A run hash or id that would not be a plain file name under its folder."""


class PathEscape(ValueError):
    """A path that resolves outside the folder it must stay in."""


def check_name(value: Any, what: str) -> str:
    """``value`` if it obeys ``SAFE_NAME_RULE``, else a one-line ``UnsafeName``."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value):
        raise UnsafeName(f"{what} {_short(value)} is not a safe name; accepted: {SAFE_NAME_RULE}")
    return value


def safe_name(text: str) -> str:
    """A file-name-safe form of an id (ids come from benchmark files), obeying
    ``SAFE_NAME_RULE``. An id that had to be changed or cut gets a hash of the original, so
    two ids never share one file."""
    text = str(text)
    out = _SAFE.sub("_", text).lstrip("._-").rstrip("._")
    if not out:
        raise ValueError(f"id {text!r} has no file-name-safe characters")
    if out != text or len(out) > 120:
        out = f"{out[:110]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return out


def confined(path: Path | str, root: Path | str, what: str = "path") -> Path:
    """``path`` (relative to ``root``, or absolute) resolved, symlinks followed; ``PathEscape``
    when it lands outside ``root``. Every path read or written goes through this."""
    base = Path(root).resolve()
    target = (base / path).resolve()  # an absolute ``path`` replaces ``base``
    if not target.is_relative_to(base):
        raise PathEscape(f"{what} {str(path)!r} resolves to {target}, outside {base}; "
                         f"accepted: paths inside {base}")
    return target


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Files


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 less the process umask."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)  # not thread-safe, hence only where /proc is absent
    os.umask(mask)
    return 0o666 & ~mask


def make_temp(folder: Path, name: str, suffix: str = ".tmp") -> Path:
    """A new empty temp file next to ``folder/name`` with the umask's mode (``mkstemp`` alone
    gives 0600, which a group or a web server sharing the results folder cannot read)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=suffix)
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = make_temp(path.parent, path.name)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def file_digest(path: Path | str) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("cvg_bench", "torch", "diffusers", "transformers", "numpy", "open_clip_torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def git_commit(repo: Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------------------------------------
# The record schema


class InvalidRecord(ValueError):
    """A sample record that does not match ``SampleRecord``; the message is one line."""


_STR_FIELDS = ("method", "generator", "benchmark", "benchmark_version", "prompt_id", "prompt",
               "category", "split", "git_commit", "created_at")
_NONEMPTY = ("method", "generator", "benchmark", "prompt_id", "category")
_DICT_OF_STR = ("evaluators", "versions")
_TIMINGS = {"generation_s": True, "guidance_s": True, "scoring_s": False}  # key -> required
_OPTIONAL_V2 = ("video_size", "video_sha256")
_FIELDS = tuple(k for k in SampleRecord.__annotations__)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)  # exact: no bool, no str


def validate_record(obj: Any, categories: list[str] | tuple[str, ...] | None = None
                    ) -> SampleRecord:
    """``obj`` as a ``SampleRecord`` if every field has its exact type and range, else a one-line
    ``InvalidRecord`` naming the field, its value and what is accepted.

    Scores (``scores``, ``scores_norm``, ``faithfulness``, ``quality``) are numbers, NaN meaning
    "not scored" (a scorer that skips a prompt); infinities are refused; normalised scores,
    ``faithfulness`` and ``quality`` lie in [0, 1]. An error record's scores are never used, so
    only their types are checked. ``categories``: the run's declared categories (its manifest),
    when known.
    """
    def bad(field: str, value: Any, accepted: str) -> InvalidRecord:
        return InvalidRecord(f"{field} = {_short(value)}; accepted: {accepted}")

    if not isinstance(obj, dict):
        raise InvalidRecord(f"record is a {type(obj).__name__}, not an object; accepted: a JSON "
                            f"object with the fields {', '.join(_FIELDS)}")
    version = obj.get("schema_version")
    if type(version) is not int or version not in SCHEMA_VERSIONS:
        raise bad("schema_version", version, f"one of {SCHEMA_VERSIONS}")
    required = [k for k in _FIELDS if k not in _OPTIONAL_V2 or version >= 2]
    missing = [k for k in required if k not in obj]
    if missing:
        raise InvalidRecord(f"missing field(s) {', '.join(missing)}; accepted: a record with "
                            f"every field of schema {version}")
    unknown = sorted(str(k) for k in obj if k not in _FIELDS)
    if unknown:
        raise InvalidRecord(f"unknown field(s) {', '.join(unknown)}; accepted: "
                            f"{', '.join(_FIELDS)}")
    for key in _STR_FIELDS:
        if not isinstance(obj[key], str) or (key in _NONEMPTY and not obj[key].strip()):
            raise bad(key, obj[key], "a non-empty string" if key in _NONEMPTY else "a string")
    if not isinstance(obj["run_hash"], str) or not _SAFE_NAME.fullmatch(obj["run_hash"]):
        raise bad("run_hash", obj["run_hash"], SAFE_NAME_RULE)
    try:
        datetime.fromisoformat(obj["created_at"])
    except ValueError:
        raise bad("created_at", obj["created_at"], "an ISO-8601 time") from None
    if categories is not None and obj["category"] not in categories:
        raise bad("category", obj["category"], f"one of the run's categories {list(categories)}")
    if type(obj["seed"]) is not int or obj["seed"] < 0:
        raise bad("seed", obj["seed"], "an integer >= 0")
    if obj["error"] is not None and not isinstance(obj["error"], str):
        raise bad("error", obj["error"], "null or a string")
    scored = obj["error"] is None

    video = obj["video_path"]
    if video is not None and (not isinstance(video, str) or not video or "\x00" in video):
        raise bad("video_path", video, "null or a path")
    if version >= 2:
        size, digest = obj["video_size"], obj["video_sha256"]
        if video is None:
            if size is not None or digest is not None:
                raise bad("video_sha256", digest, "null when video_path is null")
        else:
            if type(size) is not int or size < 0:
                raise bad("video_size", size, "the video's size in bytes (an integer >= 0)")
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise bad("video_sha256", digest, "the video's sha256 (64 lowercase hex digits)")

    def score(field: str, value: Any, unit: bool) -> None:
        if not _is_number(value) or math.isinf(value):
            raise bad(field, value, "a finite number or NaN (not scored)")
        if unit and scored and not (math.isnan(value) or 0.0 <= value <= 1.0):
            raise bad(field, value, "a number in [0, 1] or NaN (not scored)")

    for key, unit in (("scores", False), ("scores_norm", True)):
        table = obj[key]
        if not isinstance(table, dict):
            raise bad(key, table, 'an object {"<scorer>/<metric>": number}')
        for name, value in table.items():
            if not name:
                raise bad(key, table, "non-empty metric names")
            score(f"{key}[{name!r}]", value, unit)
    for key in ("faithfulness", "quality"):
        if obj[key] is not None:
            score(key, obj[key], True)
    if not isinstance(obj["details"], dict):
        raise bad("details", obj["details"], "an object")
    for key in _DICT_OF_STR:
        table = obj[key]
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise bad(key, table, "an object of strings")
    timings = obj["timings"]
    if not isinstance(timings, dict):
        raise bad("timings", timings, f"an object with {', '.join(_TIMINGS)}")
    for key, need in _TIMINGS.items():
        if key not in timings:
            if need:
                raise bad("timings", timings, f"an object with {key}")
            continue
        value = timings[key]
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise bad(f"timings[{key!r}]", value, "a finite number of seconds >= 0")
    extra = sorted(set(timings) - set(_TIMINGS))
    if extra:
        raise bad("timings", timings, f"only the keys {', '.join(_TIMINGS)}")
    return obj  # type: ignore[return-value]


def load_record(path: Path, root: Path | str, categories: list[str] | None = None
                ) -> SampleRecord:
    """The valid record in ``path`` (which must stay under ``root``), else ``InvalidRecord``
    (``PathEscape`` for a path outside ``root``). The file must be where the harness puts a
    record of that run, prompt and seed."""
    real = confined(path, root, "record")
    try:
        obj = json.loads(real.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRecord(f"unreadable ({exc}); accepted: a UTF-8 JSON file") from None
    except json.JSONDecodeError as exc:
        raise InvalidRecord(f"not JSON ({exc}); accepted: one JSON object") from None
    rec = validate_record(obj, categories)
    try:
        expected = f"{safe_name(rec['prompt_id'])}__s{rec['seed']}.json"
    except ValueError as exc:  # an id with no file-name-safe character
        raise InvalidRecord(f"prompt_id = {_short(rec['prompt_id'])}; accepted: an id with a "
                            f"file-name-safe character ({exc})") from None
    if Path(path).name != expected:
        raise InvalidRecord(f"file name {Path(path).name!r} does not match the record's prompt_id "
                            f"and seed; accepted: {expected!r}")
    run_dir = Path(path).parent.parent
    try:
        store = RunStore(run_dir.parent.parent, rec["benchmark"], rec["method"],
                         rec["generator"], rec["run_hash"])
    except ValueError as exc:  # a name with no file-name-safe character
        raise InvalidRecord(str(exc)) from None
    if (run_dir.parent.name, run_dir.name) != (store.root.parent.name, store.root.name):
        raise InvalidRecord(f"the record's benchmark, method, generator and run_hash do not "
                            f"match its folder {run_dir.parent.name}/{run_dir.name}; accepted: "
                            f"{store.root.parent.name}/{store.root.name}")
    video = rec["video_path"]
    if video is not None:
        if Path(video).is_absolute():
            if rec["method"] != "external":
                raise InvalidRecord(f"video_path = {_short(video)}; accepted: a path relative to "
                                    "the run folder (absolute only in `score` records)")
        else:
            try:
                confined(video, run_dir, "video_path")
            except PathEscape as exc:
                raise InvalidRecord(str(exc)) from None
    return rec


def _manifest_categories(run_dir: Path) -> list[str] | None:
    """The categories a run's manifest declares (its benchmark's), or None when it has none."""
    try:
        cats = json.loads((run_dir / "manifest.json").read_text()).get("categories")
    except (OSError, ValueError, AttributeError):
        return None
    return [c for c in cats if isinstance(c, str)] if isinstance(cats, list) else None


# ---------------------------------------------------------------------------------------------
# Per-sample locks

LOCK_HEARTBEAT_S = 30.0  # a held lock's mtime is refreshed this often
LOCK_STALE_S = 300.0  # a lock not refreshed for this long has lost its owner
HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def read_lock_owner(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def lock_is_stale(path: Path, owner: dict[str, Any] | None) -> bool:
    """The owner is gone: a dead pid on this host, or no heartbeat for ``LOCK_STALE_S``."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    pid = owner.get("pid") if owner else None
    if owner and owner.get("host") == HOST and type(pid) is int and not _pid_alive(pid):
        return True
    return age > LOCK_STALE_S


class SampleLock:
    """An ``O_EXCL`` lock file holding its owner's pid, host and a token; a thread refreshes
    its mtime while it is held. ``acquire`` returns None while a live owner holds it and takes
    over a stale one (owner gone), so concurrent runs and requeued SLURM tasks split the work."""

    def __init__(self, path: Path, token: str) -> None:
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    @classmethod
    def acquire(cls, path: Path) -> "SampleLock | None":
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # umask applies
            except FileExistsError:
                if not cls._break_if_stale(path):
                    return None
                continue
            token = f"{HOST}:{os.getpid()}:{time.time_ns()}:{threading.get_ident()}"
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": HOST, "token": token,
                           "since": datetime.now().astimezone().isoformat()}, f)
                f.flush()
                os.fsync(f.fileno())
            return cls(path, token)
        return None

    @staticmethod
    def _break_if_stale(path: Path) -> bool:
        owner = read_lock_owner(path)
        if not lock_is_stale(path, owner):
            return False
        breaker = path.with_name(path.name + ".break")  # one breaker at a time
        try:
            os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            try:  # a breaker killed mid-way leaves this behind
                if time.time() - breaker.stat().st_mtime > 60:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        try:
            if read_lock_owner(path) != owner or not lock_is_stale(path, owner):
                return False  # taken over by someone else meanwhile
            path.unlink(missing_ok=True)
            log.warning("took over the stale lock %s (owner %s gone)", path,
                        f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "unknown")
            return True
        finally:
            breaker.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        self._beat.join(timeout=5)
        owner = read_lock_owner(self.path)
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "SampleLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------
# A run's records


class RunStore:
    """The records of one run (one method x generator x benchmark x config hash)."""

    def __init__(self, results_dir: Path | str, benchmark: str, method: str, generator: str,
                 run_hash: str) -> None:
        check_name(run_hash, "run_hash")
        self.root = Path(results_dir) / safe_name(benchmark) / (
            f"{safe_name(method)}__{safe_name(generator)}__{run_hash}"
        )
        self.run_hash = run_hash

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def videos_dir(self) -> Path:
        return self.root / "videos"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def invalid_dir(self) -> Path:
        return self.root / "invalid"

    def stem(self, prompt_id: str, seed: int) -> str:
        return f"{safe_name(prompt_id)}__s{int(seed)}"

    def record_path(self, prompt_id: str, seed: int) -> Path:
        return self.samples_dir / f"{self.stem(prompt_id, seed)}.json"

    def video_path(self, prompt_id: str, seed: int) -> Path:
        return self.videos_dir / f"{self.stem(prompt_id, seed)}.mp4"

    def check_writable(self) -> None:
        """Fail before any work if the run directory cannot be written."""
        try:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
            self.videos_dir.mkdir(parents=True, exist_ok=True)
            # A probe of its own: shards of one run check this folder at the same moment.
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".write_probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise PermissionError(
                f"cannot write results to {self.root} ({exc.strerror or exc}); "
                "set results_dir=<a writable folder>"
            ) from exc

    def categories(self) -> list[str] | None:
        return _manifest_categories(self.root)

    def check_done(self, prompt_id: str, seed: int, prompt: str | None = None,
                   category: str | None = None, video_root: Path | str | None = None,
                   move_invalid: bool = False) -> str | None:
        """None when the sample is done, else why it must be (re)made.

        Done: the record is valid (``validate_record``), about this run, prompt id and seed (and
        ``prompt`` text and ``category`` when given), holds no error, and its video, if it saved
        one, is present under the run folder (or ``video_root`` for an absolute path) with the
        size and sha256 the record stores. ``move_invalid``: move an invalid record aside to
        ``invalid/`` (call it only while holding the sample's lock)."""
        # absolute: ``confined`` joins a relative path to the root, and this one already has it
        path = self.record_path(prompt_id, seed).absolute()
        if not os.path.lexists(path):
            return "no record"
        try:
            rec = load_record(path, self.root, self.categories())
            if rec["run_hash"] != self.run_hash or rec["prompt_id"] != prompt_id \
                    or rec["seed"] != seed:
                raise InvalidRecord(f"record of {rec['run_hash']}/{rec['prompt_id']!r}/seed "
                                    f"{rec['seed']}; accepted: {self.run_hash}/{prompt_id!r}/"
                                    f"seed {seed}")
        except (InvalidRecord, PathEscape) as exc:
            moved = self.move_aside(path) if move_invalid else None
            return f"invalid record {path.name}: {exc}" + (f" (moved to {moved})" if moved else "")
        if rec["error"] is not None:
            return "its last attempt failed (error recorded)"
        if prompt is not None and rec["prompt"] != prompt:
            return f"the prompt changed (record: {_short(rec['prompt'], 60)})"
        if category is not None and rec["category"] != category:
            return f"the category changed (record: {rec['category']!r})"
        if rec["video_path"] is None:
            return None
        return video_problem(rec, self.root, video_root)

    def is_done(self, prompt_id: str, seed: int, **expect: Any) -> bool:
        return self.check_done(prompt_id, seed, **expect) is None

    def move_aside(self, path: Path) -> Path | None:
        """Move an invalid record to ``invalid/<name>.<time>.json`` (never deleted)."""
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        dest = self.invalid_dir / f"{path.stem}.{stamp}-{os.getpid()}{path.suffix}"
        try:
            self.invalid_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)  # a symlink moves as a link: nothing outside is touched
        except FileNotFoundError:  # another process moved it first
            return None
        return dest

    def lock(self, prompt_id: str, seed: int) -> SampleLock | None:
        """The sample's lock, or None while another live process holds it."""
        return SampleLock.acquire(self.locks_dir / f"{self.stem(prompt_id, seed)}.lock")

    def lock_owner(self, prompt_id: str, seed: int) -> dict[str, Any] | None:
        return read_lock_owner(self.locks_dir / f"{self.stem(prompt_id, seed)}.lock")

    def remove_stale_temps(self, min_age_s: float = 600.0) -> int:
        """Delete temp files a killed writer left behind (they are never read).

        Only old ones: a sibling SLURM task may be writing a fresh temp file right now."""
        now = time.time()
        stale = [p for d in (self.samples_dir, self.videos_dir) if d.exists()
                 for p in d.glob(".*") if p.is_file() and now - p.stat().st_mtime > min_age_s]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def write(self, record: SampleRecord) -> Path:
        """Validate, then write atomically; an invalid record (a bug) is never written."""
        validate_record(record)
        if record["run_hash"] != self.run_hash:
            raise InvalidRecord(f"run_hash = {record['run_hash']!r}; accepted: {self.run_hash!r} "
                                "(this store's)")
        path = self.record_path(record["prompt_id"], record["seed"])
        confined(path.absolute(), self.root, "record")
        atomic_write_json(path, record)
        return path

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.root / "manifest.json", manifest)

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.root / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def records(self) -> list[SampleRecord]:
        return list(read_records(self.root))


def video_problem(rec: SampleRecord, run_dir: Path | str,
                  video_root: Path | str | None = None) -> str | None:
    """None when the record's video is present with the stored size and sha256, else why not.

    A relative ``video_path`` must stay under ``run_dir``; an absolute one (``score``) under
    ``video_root``. A schema-1 record stores no hash, so its video cannot be trusted."""
    video = rec["video_path"]
    if video is None:
        return "no video saved"
    root = run_dir if not Path(video).is_absolute() else video_root
    if root is None:
        return f"video {video!r} is absolute but no videos folder is known to confine it"
    try:
        real = confined(video, root, "video_path")
    except PathEscape as exc:
        return str(exc)
    if "video_sha256" not in rec:
        return "the record predates video hashes (schema 1)"
    if not real.is_file():
        return f"video {video} is missing"
    size, digest = file_digest(real)
    if size != rec["video_size"] or digest != rec["video_sha256"]:
        return (f"video {video} changed or is damaged ({size} bytes, sha256 {digest[:12]}...; "
                f"the record has {rec['video_size']} bytes, {str(rec['video_sha256'])[:12]}...)")
    return None


def iter_records(root: Path | str) -> Iterator[dict[str, Any]]:
    """Raw: every parseable ``samples/*.json`` under ``root`` as stored, NOT validated (tools
    that write partial records of their own). Harness readers use ``read_records``."""
    for path in sorted(Path(root).absolute().rglob("samples/*.json")):
        if path.name.startswith(".") or not path.is_file():
            continue
        yield json.loads(confined(path, root, "record").read_text())


def read_records(root: Path | str, invalid: list[tuple[Path, str]] | None = None
                 ) -> Iterator[SampleRecord]:
    """Every VALID sample record under ``root`` (any depth), in path order.

    A record that fails ``load_record`` (not JSON, a wrong type or range, an unknown category
    of its run, a file outside ``root``) is left out and reported: appended to ``invalid`` as
    (path, reason) when given, else logged as a warning naming the file."""
    base = Path(root).absolute()  # rglob yields paths under base: absolute, never re-joined to root
    manifests: dict[Path, list[str] | None] = {}
    for path in sorted(base.rglob("samples/*.json")):
        if path.name.startswith("."):
            continue
        run_dir = path.parent.parent
        if run_dir not in manifests:
            manifests[run_dir] = _manifest_categories(run_dir)
        try:
            rec = load_record(path, base, manifests[run_dir])
        except (InvalidRecord, PathEscape) as exc:
            if invalid is not None:
                invalid.append((path, str(exc)))
            else:
                log.warning("skipping invalid record %s: %s", path, exc)
            continue
        yield rec
