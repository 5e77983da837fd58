"""The conda environments of ``envs/`` against the code the rules run (``--software-deployment-method conda``).

conda-forge cannot be reached from the test machines, so the environments are not built here. What is
checked instead: every rule names an environment that exists (with its post-deploy script), every module
a rule's ``mlepi`` command imports, directly or through other mlepi modules, is a package of that
environment, and the versions pinned there are those of ``requirements.txt``, which the tests run on.
"""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from workflow_helpers import ROOT

SRC = ROOT / "src" / "mlepi"
RULES = ROOT / "workflow" / "rules"
# Import name -> the conda-forge package(s) that provide it.
CONDA_PACKAGE = {"numpy": {"numpy"}, "scipy": {"scipy"}, "h5py": {"h5py"}, "matplotlib": {"matplotlib"},
                 "yaml": {"pyyaml"}, "jsonschema": {"jsonschema"}, "tqdm": {"tqdm"},
                 "torch": {"pytorch", "pytorch-gpu"}, "torch_geometric": {"torch-geometric"}, "ase": {"ase"},
                 "gpaw": {"gpaw"}, "phonopy": {"phonopy"}, "spglib": {"spglib"}, "dftd3": {"dftd3-python"}}
PIP_NAME = {"pytorch": "torch", "pytorch-gpu": "torch", "dftd3-python": "dftd3"}


def rule_blocks() -> dict[str, str]:
    """Rule name -> its text, for every ``rule`` and ``checkpoint`` of the workflow."""
    blocks = {}
    for path in RULES.glob("*.smk"):
        parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", path.read_text(), flags=re.MULTILINE)
        blocks.update(dict(zip(parts[1::2], parts[2::2])))
    return blocks


def env_packages(env_file: Path) -> dict[str, str | None]:
    """Package name -> pinned version (None if unpinned) of a conda environment, pip section included."""
    packages = {}
    for dep in yaml.safe_load(env_file.read_text())["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, version = re.match(r"([\w.\-]+)\s*(?:==?\s*(\S+))?", spec).groups()
            packages[name] = version
    return packages


def mlepi_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Top-level third-party imports of an mlepi module and of every mlepi module it imports, anywhere in it."""
    seen = set() if seen is None else seen
    if module in seen:
        return set()
    seen.add(module)
    third_party = set()
    for node in ast.walk(ast.parse((SRC / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            for name in names:
                if (SRC / f"{name}.py").exists():
                    third_party |= mlepi_imports(name, seen)
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0:
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            third_party |= {n.split(".")[0] for n in names if n.split(".")[0] not in sys.stdlib_module_names}
    return third_party


def command_modules(subcommand: str) -> set[str]:
    """The mlepi modules ``mlepi <subcommand>`` imports (from ``cmd_<subcommand>`` in cli.py)."""
    tree = ast.parse((SRC / "cli.py").read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f"cmd_{subcommand}")
    imports = [node for node in ast.walk(func) if isinstance(node, ast.ImportFrom) and node.level == 1]
    return {name for node in imports for name in ([node.module] if node.module else [a.name for a in node.names])}


BLOCKS = rule_blocks()


@pytest.mark.parametrize("rule", sorted(BLOCKS))
def test_rule_environment_provides_what_its_command_imports(rule):
    block = BLOCKS[rule]
    match = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
    assert match, f"rule {rule} names no conda environment"
    env_file = (RULES / match.group(1)).resolve()
    assert env_file.exists(), env_file
    post_deploy = env_file.with_name(env_file.stem + ".post-deploy.sh")  # installs mlepi from the checkout
    assert post_deploy.exists() and post_deploy.stat().st_mode & 0o111, post_deploy
    packages = env_packages(env_file)
    subcommands = set(re.findall(r"\bmlepi(?:\.cli)? (\w+)", block))
    assert subcommands, f"rule {rule} runs no mlepi command"
    needed = {"cli"} | {m for sub in subcommands for m in command_modules(sub)}
    imports = set().union(*(mlepi_imports(m) for m in needed)) - {"mlepi"}
    missing = {name for name in imports if not CONDA_PACKAGE.get(name, {name}) & set(packages)}
    assert not missing, f"rule {rule}: {env_file.name} lacks packages for {sorted(missing)}"


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_environment_versions_are_the_tested_ones(env_file):
    pins = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "requirements.txt").read_text()
                .splitlines() if "==" in line.split("#")[0])
    for name, version in env_packages(env_file).items():
        pip_name = PIP_NAME.get(name, name)
        if version is None or pip_name not in pins:
            continue
        assert pins[pip_name].startswith(version), f"{env_file.name}: {name}={version}, tested {pins[pip_name]}"
