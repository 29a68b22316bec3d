"""A throw-away one-node SLURM cluster on this machine, for testing the SLURM launch path.

    python -m cvg_bench.slurm_local start DIR   # munge key + slurm.conf in DIR, daemons up
    eval "$(python -m cvg_bench.slurm_local env DIR)"   # SLURM_CONF and PATH for clients
    python -m cvg_bench.slurm_local stop DIR    # cancel its jobs, stop exactly its daemons

Installs nothing: it needs Debian's ``slurm-wlm`` and ``munge`` (``apt-get install -y
slurm-wlm munge``) and root (slurmd runs jobs as their user; the daemons run as root).
Everything the cluster writes lives under DIR: munge key and socket, slurm.conf, state,
spool, pid and log files. The daemons run in the foreground of processes this module starts;
their pids are recorded in ``DIR/pids.json`` and ``stop`` kills exactly those pids (after
checking each still runs the command it was started with), plus any job-step daemon
(``slurmstepd``) of this cluster left running after its jobs were cancelled.

The cluster: ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
``JobAcctGatherType=jobacct_gather/none``, ``SelectType=select/cons_tres`` with
``CR_Core_Memory``, one node with this machine's real CPUs and memory (``slurmd -C``), one
partition ``debug``, free TCP ports on 127.0.0.1, job records kept an hour (``MinJobAge``).

No accounting database: ``sacct`` (which submitit polls for job states) is served by a
wrapper in ``DIR/bin`` that answers from ``squeue`` (finished jobs stay visible for
``MinJobAge``) in sacct's own ``--parsable2`` format; ``env`` puts it first on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

INSTALL_LINE = "apt-get install -y slurm-wlm munge"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "scancel", "scontrol", "srun")
PARTITION = "debug"

SACCT_SHIM = """#!/bin/sh
# sacct stand-in for a cluster without slurmdbd (written by cvg_bench.slurm_local): answers
# submitit's `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]` from squeue, which
# lists finished jobs too for MinJobAge seconds. Array tasks print as ID_TASK, pending ranges
# as ID_[a-b%n], as sacct does.
ids=""
while [ $# -gt 0 ]; do
  case "$1" in
    -j|--jobs) ids="$ids${ids:+,}$2"; shift 2 ;;
    -j*) ids="$ids${ids:+,}${1#-j}"; shift ;;
    --jobs=*) ids="$ids${ids:+,}${1#--jobs=}"; shift ;;
    *) shift ;;
  esac
done
echo "JobID|State|NodeList"
[ -z "$ids" ] && exit 0
exec squeue --noheader --states=all --jobs="$ids" --format="%i|%T|%N" 2>/dev/null
"""


class ClusterError(RuntimeError):
    pass


def missing() -> list[str]:
    """Programs this module needs that are not installed (empty: ready)."""
    return [p for p in (*DAEMONS, *CLIENTS, "munge", "unmunge") if not _which(p)]


def unavailable_reason() -> str | None:
    """Why a local cluster cannot start here, or None."""
    gone = missing()
    if gone:
        return f"SLURM/munge not installed (missing: {', '.join(gone)}); install with: {INSTALL_LINE}"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd runs jobs as their submitting user)"
    return None


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line() -> str:
    """This machine as slurmd sees it: ``NodeName=... CPUs=... RealMemory=...``."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NodeName=")), None)
    if line is None:
        raise ClusterError(f"`slurmd -C` printed no NodeName line: {out.stdout!r} {out.stderr!r}")
    return line


def paths(root: Path | str) -> dict[str, Path]:
    root = Path(root).resolve()
    return {
        "root": root, "etc": root / "etc", "conf": root / "etc" / "slurm.conf",
        "munge": root / "munge", "key": root / "munge" / "munge.key",
        "socket": root / "munge" / "munge.socket", "state": root / "state",
        "spool": root / "spool", "log": root / "log", "run": root / "run",
        "bin": root / "bin", "pids": root / "pids.json",
    }


def write_config(root: Path | str, cred_expire_s: int = 10) -> dict[str, Path]:
    """The munge key, slurm.conf and the sacct wrapper under ``root``."""
    p = paths(root)
    if len(str(p["socket"])) > 100:  # a unix socket path holds at most 107 bytes
        raise ClusterError(f"cluster folder {p['root']} is too deep for munge's socket path; "
                           "use a shorter one")
    for key in ("etc", "munge", "state", "spool", "log", "run", "bin"):
        p[key].mkdir(parents=True, exist_ok=True)
    os.chmod(p["munge"], 0o700)
    p["key"].write_bytes(os.urandom(1024))
    os.chmod(p["key"], 0o400)
    node = node_line()
    host = node.split()[0].split("=", 1)[1]
    (p["etc"] / "plugstack.conf").write_text("")
    conf = f"""# one-node test cluster written by cvg_bench.slurm_local; every path under {p['root']}
ClusterName=cvglocal
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120)
AuthInfo=socket={p['socket']},cred_expire={cred_expire_s}
StateSaveLocation={p['state']}
SlurmdSpoolDir={p['spool']}/slurmd
SlurmctldPidFile={p['run']}/slurmctld.pid
SlurmdPidFile={p['run']}/slurmd.pid
SlurmctldLogFile={p['log']}/slurmctld.log
SlurmdLogFile={p['log']}/slurmd.log
PlugStackConfig={p['etc']}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={p['log']}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job that asks for no memory gets this much per CPU, not the whole node
DefMemPerCPU=1024
SchedulerType=sched/backfill
# schedule pending (e.g. requeued) jobs within seconds, not the default minute
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=5
{node.split(' UpTime=')[0]} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    p["conf"].write_text(conf)
    shim = p["bin"] / "sacct"
    shim.write_text(SACCT_SHIM)
    os.chmod(shim, 0o755)
    return p


def client_env(root: Path | str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for SLURM clients (sinfo, sbatch, submitit) talking to this cluster."""
    p = paths(root)
    env = dict(os.environ if base is None else base)
    env["SLURM_CONF"] = str(p["conf"])
    env["PATH"] = f"{p['bin']}:{env.get('PATH', '')}:/usr/sbin:/sbin"
    for key in [k for k in env if k.startswith(("SLURM_JOB", "SLURM_ARRAY", "SBATCH_", "SRUN_"))]:
        env.pop(key)  # a test run inside another SLURM job must not inherit that job's settings
    return env


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = raw.rstrip(b"\0").split(b"\0")
    return [x.decode(errors="replace") for x in parts] if raw else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _client(root: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=client_env(root), capture_output=True, text=True,
                          timeout=timeout)


def start(root: Path | str, timeout_s: float = 90.0, cred_expire_s: int = 10) -> dict[str, int]:
    """Write the config under ``root`` and start munged, slurmctld and slurmd; returns the
    pids once ``sinfo`` shows the node idle. On failure, stops what it started and raises."""
    reason = unavailable_reason()
    if reason:
        raise ClusterError(reason)
    if paths(root)["pids"].exists():
        raise ClusterError(f"{paths(root)['pids']} exists: a cluster may be running there; "
                           "stop it first")
    p = write_config(root, cred_expire_s=cred_expire_s)
    env = dict(os.environ, SLURM_CONF=str(p["conf"]))
    commands = {
        "munged": [_which("munged"), "--foreground", "--force", f"--key-file={p['key']}",
                   f"--socket={p['socket']}", f"--pid-file={p['run']}/munged.pid",
                   f"--log-file={p['log']}/munged.log", f"--seed-file={p['munge']}/munged.seed"],
        "slurmctld": [_which("slurmctld"), "-D", "-i", "-f", str(p["conf"])],
        "slurmd": [_which("slurmd"), "-D", "-f", str(p["conf"])],
    }
    pids: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        for name, cmd in commands.items():
            out = open(p["log"] / f"{name}.out", "ab")
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    env=env, cwd=p["root"], start_new_session=True)
            out.close()
            pids[name] = proc.pid
            _save_pids(p, pids, commands)
            if name == "munged":
                _wait(lambda: _munge_ok(p), deadline, "munged to answer", p, pids)
            elif name == "slurmctld":
                _wait(lambda: _client(p["root"], "sinfo", "-h").returncode == 0, deadline,
                      "slurmctld to answer sinfo", p, pids)
        _wait(lambda: _node_state(p["root"]) == "idle", deadline, "the node to be idle", p, pids)
    except BaseException:
        stop(p["root"])
        raise
    return pids


def _save_pids(p: dict[str, Path], pids: dict[str, int], commands: dict[str, list[str]]) -> None:
    p["pids"].write_text(json.dumps({name: {"pid": pid, "cmd": commands[name]}
                                     for name, pid in pids.items()}, indent=1) + "\n")


def _munge_ok(p: dict[str, Path]) -> bool:
    if not p["socket"].exists():
        return False
    cred = subprocess.run([_which("munge"), "-n", "-S", str(p["socket"])], capture_output=True)
    if cred.returncode != 0:
        return False
    back = subprocess.run([_which("unmunge"), "-S", str(p["socket"])], input=cred.stdout,
                          capture_output=True)
    return back.returncode == 0


def _node_state(root: Path) -> str:
    out = _client(root, "sinfo", "-h", "-N", "-o", "%t")
    return out.stdout.strip() if out.returncode == 0 else ""


def _wait(check, deadline: float, what: str, p: dict[str, Path], pids: dict[str, int]) -> None:
    while True:
        dead = [name for name, pid in pids.items() if not _alive(pid)]
        if dead:
            raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; "
                               f"logs: {p['log']}\n{_log_tail(p)}")
        if check():
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what}; logs: {p['log']}\n{_log_tail(p)}")
        time.sleep(0.5)


def _log_tail(p: dict[str, Path], lines: int = 15) -> str:
    out = []
    for log in sorted(p["log"].glob("*")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        if text:
            out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)


def _step_processes(root: Path) -> list[int]:
    """Pids of this cluster's job-step daemons (``slurmstepd``): slurmd forks them in its own
    working directory, which ``start`` sets to the cluster's folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmd = _cmdline(int(entry.name))
        if not cmd or not cmd[0].startswith("slurmstepd"):
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == root:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _terminate(pid: int, expect: list[str] | None, grace_s: float) -> None:
    cmd = _cmdline(pid)
    if cmd is None or not _alive(pid):
        return
    if expect is not None and cmd[: len(expect)] != expect:
        return  # the pid was reused by another program: not ours to kill
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop(root: Path | str, grace_s: float = 10.0) -> list[int]:
    """Cancel the cluster's jobs, then stop the daemons ``start`` recorded, by pid (and any
    ``slurmstepd`` of this cluster still running). Returns the pids signalled."""
    p = paths(root)
    if not p["pids"].exists():
        return []
    recorded = json.loads(p["pids"].read_text())
    if "slurmctld" in recorded and _alive(recorded["slurmctld"]["pid"]):
        try:
            jobs = _client(p["root"], "squeue", "-h", "-o", "%A", timeout=15).stdout.split()
            if jobs:
                _client(p["root"], "scancel", *sorted(set(jobs)), timeout=15)
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline and _client(
                        p["root"], "squeue", "-h", "-o", "%A", timeout=15).stdout.strip():
                    time.sleep(0.5)
        except (subprocess.SubprocessError, OSError):
            pass  # the daemons go anyway
    signalled = []
    for name in ("slurmd", "slurmctld", "munged"):
        if name in recorded:
            pid, cmd = recorded[name]["pid"], recorded[name]["cmd"]
            _terminate(pid, cmd, grace_s)
            signalled.append(pid)
    for pid in _step_processes(p["root"]):
        _terminate(pid, None, grace_s)
        signalled.append(pid)
    p["pids"].unlink(missing_ok=True)
    return signalled


def running(root: Path | str) -> dict[str, int]:
    """The recorded daemons that are still alive."""
    p = paths(root)
    if not p["pids"].exists():
        return {}
    recorded = json.loads(p["pids"].read_text())
    return {name: v["pid"] for name, v in recorded.items() if _alive(v["pid"])}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] not in ("start", "stop", "env", "status"):
        print("usage: python -m cvg_bench.slurm_local start|stop|env|status DIR", file=sys.stderr)
        return 2
    action, root = argv
    if action == "start":
        t0 = time.monotonic()
        try:
            pids = start(root)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"cluster up in {time.monotonic() - t0:.1f}s: {pids}; "
              f"clients: eval \"$(python -m cvg_bench.slurm_local env {root})\"")
    elif action == "stop":
        print(f"stopped pids: {stop(root)}")
    elif action == "env":
        env = client_env(root, base={"PATH": os.environ.get("PATH", "")})
        print(f"export SLURM_CONF={env['SLURM_CONF']}\nexport PATH={env['PATH']}")
    else:
        alive = running(root)
        print(json.dumps(alive))
        return 0 if alive else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
