"""Every `python -m cvg_bench ...` command in the README composes: its command exists and every
override names a real config group or key (hydra's struct mode refuses unknown keys). The demo
(`make demo`, run by CI) runs run / leaderboard / report end to end; the Makefile targets in the
README are what CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDERS = ("RUN_DIR", "CLASSIFIER_DIR", "VIDEOS", "DIR", "PATH", "OUT")


def readme_commands() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("python -m cvg_bench"):
                commands.append(line)
    return commands


def first_of_sweep(arg: str) -> str:
    """`seed=0,1,2` -> `seed=0` (a sweep composes like its first job)."""
    key, eq, value = arg.partition("=")
    if not eq or value.startswith(("[", "{", "'", '"')):
        return arg
    return f"{key}={value.split(',')[0]}"


def test_the_readme_has_commands():
    commands = readme_commands()
    assert len(commands) >= 15
    assert any(c.startswith("python -m cvg_bench run method=cvg benchmark=shapes") for c in commands)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_composes(command, tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from cvg_bench.cli import COMMANDS
    from cvg_bench.cli import main as cli
    from cvg_bench.config import CONFIG_MODULE, register_schemas

    args = shlex.split(command)[3:]
    for name in PLACEHOLDERS:
        args = [a.replace(name, str(tmp_path / name.lower())) if "=" in a else a for a in args]
    name, rest = args[0], args[1:]
    assert name == "<command>" or name in COMMANDS, name
    if name == "<command>" or "--help" in rest:
        return
    if COMMANDS[name].task is None:  # `list`: not a hydra app, cheap to run
        assert cli([name, *rest]) == 0
        return
    overrides = [first_of_sweep(a) for a in rest if a != "-m"]
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    assert cfg is not None
