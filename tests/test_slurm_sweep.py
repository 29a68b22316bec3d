"""Launching sweeps through hydra-submitit-launcher: the launcher presets, and a real SLURM.

Fast tests (default run): every preset under configs/hydra/launcher composes with `run` and
`train`, its keys resolve, and the sbatch script it leads to asks for what the preset says.

`slurm` marker (excluded by default; `python -m pytest -m slurm tests/test_slurm_sweep.py`):
a one-node SLURM cluster on this machine (cvg_bench/slurm_local.py; needs root and
`apt-get install -y slurm-wlm munge`, skipped without them, a failure when $CI is set) runs
a sweep as one job array; one task is preempted mid-way (USR2: submitit checkpoints and
requeues it), another is cancelled mid-way (scancel); the same command submitted again then
completes the sweep, and every expected record exists exactly once.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("slurm", "slurm_gpu", "local", "submitit_slurm", "submitit_local")


# ----------------------------------------------------------------------------- presets (fast)

def compose(command: str, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from cvg_bench.config import CONFIG_MODULE, register_schemas

    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name=command, overrides=list(overrides),
                             return_hydra_config=True)


def resolved_launcher(cfg) -> dict:
    """The launcher node as the launcher receives it (hydra's runtime keys filled in)."""
    OmegaConf.set_readonly(cfg, False)
    cfg.hydra.job.config_name = cfg.hydra.job.config_name or "run"
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_preset_files_are_the_ones_tested():
    found = {p.stem for p in (ROOT / "configs" / "hydra" / "launcher").glob("*.yaml")}
    assert found == {"slurm", "slurm_gpu", "local"}


@pytest.mark.parametrize("command", ["run", "train"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_resolves(preset, command, tmp_path, monkeypatch):
    monkeypatch.delenv("CVG_SLURM_PARTITION", raising=False)
    extra = [f"results_dir={tmp_path}"] if command == "run" else []
    cfg = compose(command, f"hydra/launcher={preset}", *extra)
    launcher = resolved_launcher(cfg)
    kind = "Slurm" if "slurm" in preset else "Local"
    assert launcher["_target_"] == f"hydra_plugins.hydra_submitit_launcher.submitit_launcher.{kind}Launcher"
    # submitit's scripts, pickles and logs live in the sweep dir (under results_dir for run)
    sweep_dir = cfg.hydra.sweep.dir
    assert launcher["submitit_folder"] == f"{sweep_dir}/.submitit/%j"
    if command == "run":
        assert sweep_dir.startswith(f"{tmp_path}/multirun/")
    if preset in ("slurm", "slurm_gpu", "local"):
        assert launcher["name"] == f"cvg_{command}"
    if preset in ("slurm", "slurm_gpu"):
        assert launcher["partition"] is None  # no CVG_SLURM_PARTITION: the cluster's default
        assert launcher["additional_parameters"] == {"requeue": True}
        assert launcher["max_num_timeout"] > 0  # timeouts requeue (runs are idempotent)
        assert all(isinstance(line, str) for line in launcher["setup"])
        assert launcher["gpus_per_node"] == (1 if preset == "slurm_gpu" else None)


def test_site_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CVG_SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("CVG_SLURM_ACCOUNT", "proj42")
    monkeypatch.setenv("VIRTUAL_ENV", "/opt/venvs/cvg")
    cfg = compose("run", "hydra/launcher=slurm_gpu", f"results_dir={tmp_path}",
                  "hydra.launcher.array_parallelism=3")
    launcher = resolved_launcher(cfg)
    assert launcher["partition"] == "gpu-long" and launcher["account"] == "proj42"
    assert launcher["qos"] is None and launcher["array_parallelism"] == 3
    assert '. "/opt/venvs/cvg/bin/activate"' in launcher["setup"][0]


def test_slurm_preset_makes_a_requeueable_job_array(tmp_path, monkeypatch):
    """The sbatch script submitit writes from the preset, parameters mapped as
    hydra-submitit-launcher maps them (no SLURM needed to write it)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    monkeypatch.delenv("CVG_SLURM_PARTITION", raising=False)
    # submitit refuses to build a SLURM executor where `srun` is not on PATH; writing the
    # script needs none, so this test runs on machines without slurm-wlm too
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    params = resolved_launcher(compose("run", "hydra/launcher=slurm", f"results_dir={tmp_path}"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    params.pop("_target_")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    slurm = executor._executor
    slurm.parameters["map_count"] = 6  # what map_array sets for a 6-point sweep
    script = slurm._make_submission_file_text("python -m submitit.core._submit X", "uid")
    for line in ("#SBATCH --array=0-5%6", "#SBATCH --requeue", "#SBATCH --signal=USR2@120",
                 "#SBATCH --time=240", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8GB",
                 "#SBATCH --job-name=cvg_run", "export PYTHONUNBUFFERED=1"):
        assert line in script, (line, script)
    assert "--partition" not in script


# ----------------------------------------------------------------------- a real SLURM (slow)

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    from cvg_bench import slurm_local

    reason = slurm_local.unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but no local SLURM can start: {reason}. "
                        f"CI installs it with: {slurm_local.INSTALL_LINE}")
        pytest.skip(f"no local SLURM: {reason}")
    root = tmp_path_factory.mktemp("slurm")
    t0 = time.monotonic()
    try:
        slurm_local.start(root)
        print(f"local SLURM up in {time.monotonic() - t0:.1f}s under {root}")
        yield root
    finally:
        stopped = slurm_local.stop(root)
        print(f"local SLURM stopped (pids {stopped})")


def sweep_command(results: Path) -> list[str]:
    return [sys.executable, "-m", "cvg_bench", "run", "-m", "method=vanilla",
            f"seed={','.join(map(str, SEEDS))}", "generator=dummy", "generator.delay_s=1",
            "benchmark=shapes", "benchmark.limit=1", f"results_dir={results}",
            "leaderboard=false", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=30"]


def expected_prompt_ids() -> list[str]:
    from cvg_bench import registry

    cfg = OmegaConf.load(ROOT / "configs" / "benchmark" / "shapes.yaml")
    cfg.limit = 1
    return [spec.prompt_id for spec in registry.build("benchmark", cfg).prompts()]


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("shapes/*/samples/*.json"))]


def n_records(results: Path, seed: int) -> int:
    return len(list(results.glob(f"shapes/*/samples/*__s{seed}.json")))


def squeue(env: dict, *fmt_args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-t", "all", *fmt_args], env=env, capture_output=True,
                         text=True, timeout=30)
    return [line.split("|") for line in out.stdout.splitlines() if line.strip()]


def array_tasks(env: dict, array_id: str) -> dict[int, str]:
    rows = squeue(env, "-o", "%F|%K|%T")
    return {int(task): state for job, task, state in rows if job == array_id and task.isdigit()}


def newest_array(env: dict, known: set[str]) -> str | None:
    ids = {row[0] for row in squeue(env, "-n", "cvg_run", "-o", "%F")} - known
    return max(ids, key=int) if ids else None


def wait_idle(env: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = [r for r in squeue(env, "-o", "%i|%T")
                  if r[1] in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING")]
        if not active:
            return
        time.sleep(1)
    raise AssertionError(f"jobs still active after {timeout}s: {active}")


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"sweep still running after {timeout}s:\n{out[-4000:]}")
    return out


@pytest.mark.slurm
def test_sweep_is_one_job_array_and_survives_preemption_and_cancel(slurm_cluster, tmp_path):
    from cvg_bench import slurm_local

    env = slurm_local.client_env(slurm_cluster)
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("VIRTUAL_ENV", None)
    results = tmp_path / "results"
    prompts = expected_prompt_ids()
    assert len(prompts) == 7
    known = {row[0] for row in squeue(env, "-o", "%F")}

    # 1. the sweep: two points (seed=0,1) -> one array of two tasks
    t0 = time.monotonic()
    first = subprocess.Popen(sweep_command(results), cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    preempted = cancelled = None
    array_id = None
    try:
        deadline = time.monotonic() + 240
        while (preempted is None or cancelled is None) and time.monotonic() < deadline:
            if first.poll() is not None:
                break
            array_id = array_id or newest_array(env, known)
            tasks = array_tasks(env, array_id) if array_id else {}
            n0, n1 = n_records(results, 0), n_records(results, 1)
            # task 0 (seed 0) is preempted mid-way: USR2 to its step, as SLURM does before a
            # time limit or preemption; submitit checkpoints the call and requeues the task
            if preempted is None and tasks.get(0) == "RUNNING" and 1 <= n0 < len(prompts):
                subprocess.run(["scancel", "--signal=USR2", f"{array_id}_0"], env=env, check=True)
                preempted = n0
            # task 1 (seed 1) is cancelled mid-way: it is gone, the launcher will fail on it
            if cancelled is None and tasks.get(1) == "RUNNING" and 1 <= n1 < len(prompts):
                subprocess.run(["scancel", f"{array_id}_1"], env=env, check=True)
                cancelled = n1
            time.sleep(0.2)
        assert array_id is not None, "no job array appeared in squeue"
        assert preempted is not None and cancelled is not None, (
            f"could not catch both tasks mid-way (preempted at {preempted}, cancelled at "
            f"{cancelled} records); squeue: {array_tasks(env, array_id)}")
        out = finish(first, timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    first_s = time.monotonic() - t0
    wait_idle(env, timeout=120)
    assert first.returncode != 0, out[-3000:]  # the cancelled task fails the sweep
    assert set(array_tasks(env, array_id)) == {0, 1}  # one array, one task per sweep point
    submitit_dir = next(results.glob("multirun/*/.submitit"))
    log0 = (submitit_dir / f"{array_id}_0" / f"{array_id}_0_0_log.out").read_text()
    err0 = (submitit_dir / f"{array_id}_0" / f"{array_id}_0_0_log.err").read_text()
    assert "this job is preempted" in err0 + log0 and "Requeued job" in err0 + log0, err0[-3000:]
    assert "Job completed successfully" in log0, log0[-3000:]
    assert array_tasks(env, array_id)[1] == "CANCELLED"
    # the requeued task finished its seed, skipping what it had written before the signal
    assert n_records(results, 0) == len(prompts)
    assert re.search(rf"skipped \(already done\): {preempted}\b", log0), log0[-3000:]
    partial = n_records(results, 1)
    assert 1 <= partial < len(prompts)
    before = {(r["seed"], r["prompt_id"]): r["created_at"] for r in records(results)}

    # 2. the same command again: a new array; finished samples are skipped, the rest run
    t1 = time.monotonic()
    second = subprocess.run(sweep_command(results), cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    second_s = time.monotonic() - t1
    assert second.returncode == 0, second.stdout[-3000:]

    # 3. every expected record exactly once, none an error, nothing finished was redone
    recs = records(results)
    keys = collections.Counter((r["method"], r["seed"], r["prompt_id"]) for r in recs)
    expected = {("vanilla", s, p) for s in SEEDS for p in prompts}
    assert set(keys) == expected and set(keys.values()) == {1}, keys
    assert [r for r in recs if r["error"] is not None] == []
    assert len({r["run_hash"] for r in recs}) == 1
    assert len(list(results.glob("shapes/*/manifest.json"))) == 1
    after = {(r["seed"], r["prompt_id"]): r["created_at"] for r in recs}
    assert all(after[k] == v for k, v in before.items()), "a finished sample was recomputed"
    print(f"first sweep (preempt + cancel) {first_s:.0f}s, re-submission {second_s:.0f}s; "
          f"records before re-submission: {len(before)}/{len(expected)}")
