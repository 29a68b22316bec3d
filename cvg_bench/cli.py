"""`python -m cvg_bench <command> [hydra overrides]`.

Each command except `list` is a hydra app whose primary config is ``configs/<command>.yaml``,
so `--help`, `--cfg job`, overrides and multirun (`-m`) work as in any hydra app.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from cvg_bench.config import CONFIG_MODULE, register_schemas

log = logging.getLogger("cvg_bench")

# Errors that mean "bad input": printed as one line (set CVG_BENCH_DEBUG=1 for the traceback).
USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, PermissionError)


@dataclass(frozen=True)
class Command:
    summary: str
    task: Callable[[DictConfig], int] | None  # None: not a hydra app


def _run(cfg: DictConfig) -> int:
    from cvg_bench.run import run

    summary = run(cfg)
    print(f"run dir: {summary.run_dir}\nsamples done: {summary.done}, skipped (already done): "
          f"{summary.skipped}, failed: {len(summary.errors)}")
    for err in summary.errors[:10]:
        print(f"  failed: {err}")
    if cfg.leaderboard:
        _print_leaderboard([str(summary.run_dir.parent)], str(summary.run_dir.parent / "leaderboard"))
    return 1 if summary.errors else 0


def _score(cfg: DictConfig) -> int:
    from cvg_bench.score import score_folder

    summary = score_folder(cfg)
    print(f"run dir: {summary.run_dir}\nscored: {summary.done}, skipped: {summary.skipped}, "
          f"failed: {len(summary.errors)}")
    for err in summary.errors[:10]:
        print(f"  failed: {err}")
    _print_leaderboard([str(summary.run_dir)], str(summary.run_dir / "leaderboard"))
    return 1 if summary.errors else 0


def _train(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from cvg_bench.train import train_component

    train_component(HydraConfig.get().runtime.choices["component"], cfg.component)
    return 0


def _leaderboard(cfg: DictConfig) -> int:
    _print_leaderboard(list(cfg.results_dirs), cfg.out_dir, cfg.categories, cfg.faithfulness)
    return 0


def _print_leaderboard(results_dirs: list[str], out_dir: str, categories=None,
                       faithfulness: str | None = None) -> None:
    from cvg_bench.leaderboard import write_leaderboards

    paths = write_leaderboards(results_dirs, out_dir, categories=categories,
                               faithfulness=faithfulness)
    for key, path in paths.items():
        if key.endswith("/md"):
            print(f"\n## {key.removesuffix('/md')}\n" + Path(path).read_text())
    print(f"leaderboards written under {out_dir}")


def _report(cfg: DictConfig) -> int:
    from omegaconf import OmegaConf

    from cvg_bench.report import write_report

    def plain(value):  # ListConfig -> list; None stays None
        return OmegaConf.to_container(value) if value is not None else None

    index = write_report(list(cfg.results_dirs), cfg.out_dir, limit=cfg.limit,
                         seeds=plain(cfg.seeds), categories=plain(cfg.categories),
                         methods=plain(cfg.methods))
    print(f"report written: {index}")
    return 0


def _bench(cfg: DictConfig) -> int:
    from cvg_bench.bench import main as bench_main

    return bench_main(cfg)


def _select(cfg: DictConfig) -> int:
    from cvg_bench.select import main as select_main

    return select_main(cfg)


def _paired(cfg: DictConfig) -> int:
    from cvg_bench.paired import main as paired_main

    return paired_main(cfg)


def _export(cfg: DictConfig) -> int:
    from cvg_bench.export import main as export_main

    return export_main(cfg)


def _prompts(cfg: DictConfig) -> int:
    from cvg_bench.prompts import main as prompts_main

    return prompts_main(cfg)


def _reproduce(cfg: DictConfig) -> int:
    from cvg_bench.reproduce import main as reproduce_main

    return reproduce_main(cfg)


COMMANDS: dict[str, Command] = {
    "run": Command("generate + score a method on a benchmark over seeds", _run),
    "score": Command("score existing videos (a folder with prompts.jsonl and <id>.mp4)", _score),
    "train": Command("train a component (component=generator|classifier|...)", _train),
    "leaderboard": Command("tables (CSV, Markdown, LaTeX) and plots from records", _leaderboard),
    "report": Command("HTML page per benchmark: each prompt's videos side by side, scores",
                      _report),
    "bench": Command("guidance cost: seconds, memory, breakdown, early exit (ratios)", _bench),
    "select": Command("the best setting of each method in a sweep, by a score (seen split)", _select),
    "paired": Command("per-prompt wins / ties / losses against a baseline run, with a sign test", _paired),
    "export": Command("a run's videos in a benchmark's own layout, for its official scripts", _export),
    "prompts": Command("a benchmark's prompts per category, parsed specs, and the ones that do not map",
                       _prompts),
    "reproduce": Command("a fixed protocol end to end: tune on seen, select, report on held-out, tables",
                         _reproduce),
    "list": Command("every registered plugin with a one-line description", None),
}


def _usage() -> str:
    lines = ["usage: python -m cvg_bench <command> [hydra overrides] [--help]", "", "commands:"]
    lines += [f"  {name:<12} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "examples:", "  python -m cvg_bench run method=vanilla benchmark=shapes",
              "  python -m cvg_bench run -m method=vanilla seed=0,1,2",
              "  python -m cvg_bench list method"]
    return "\n".join(lines)


def list_plugins(args: list[str]) -> int:
    """`list [kind] [pattern]`: registered plugins, e.g. `list method 'a*'`."""
    from cvg_bench import registry

    if args and args[0] in ("-h", "--help"):
        print("usage: python -m cvg_bench list [kind] [wildcard]\n"
              f"kinds: {', '.join(registry.KINDS)}")
        return 0
    kinds = [args[0]] if args else list(registry.KINDS)
    pattern = args[1] if len(args) > 1 else "*"
    for kind in kinds:
        registry.registry(kind)  # unknown kind -> error naming the kinds
        print(f"{kind}s:")
        for name, desc in registry.describe(kind).items():
            if name in registry.names(kind, pattern):
                print(f"  {name:<16} {desc}")
    for module, err in registry.load_errors().items():
        print(f"(not loaded: {module}: {err})")
    return 0


def _hydra_app(command: str, task: Callable[[DictConfig], int]) -> int:
    import hydra

    register_schemas()
    status = {"code": 0}
    # A launcher that runs jobs in other processes (hydra/launcher=slurm|local, submitit)
    # pickles `main` with this value: there, `status` never reaches our exit code.
    launching_process = (os.uname().nodename, os.getpid())

    def main(cfg: DictConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        code = 0
        try:
            code = task(cfg)
        except USER_ERRORS as exc:
            if os.environ.get("CVG_BENCH_DEBUG"):
                raise
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"error: {msg}", file=sys.stderr)
            code = 2
        status["code"] = max(status["code"], code)
        if code and (os.uname().nodename, os.getpid()) != launching_process:
            # Fail the job instead: the launcher reports it and the sweep exits non-zero.
            raise RuntimeError(f"{command} exited with code {code} (see the error above in "
                               "this job's log)")

    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=command)(main)()
    return status["code"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"error: unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    task = COMMANDS[command].task
    if task is None:
        try:
            return list_plugins(rest)
        except KeyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    sys.argv = [f"cvg_bench {command}", *rest]  # hydra reads its overrides from sys.argv
    return _hydra_app(command, task)
