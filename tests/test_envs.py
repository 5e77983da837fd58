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

from mlepi.cli import STAGE_MODULES
from workflow_helpers import ROOT

SRC = ROOT / "src" / "mlepi"
RULES = ROOT / "workflow" / "rules"
# Import name -> the conda-forge package(s) that provide it.
CONDA_PACKAGE = {"numpy": {"numpy"}, "scipy": {"scipy"}, "h5py": {"h5py"}, "matplotlib": {"matplotlib"},
                 "yaml": {"pyyaml"}, "jsonschema": {"jsonschema"}, "tqdm": {"tqdm"},
                 "torch": {"pytorch", "pytorch-gpu"}, "torch_geometric": {"torch-geometric"}, "ase": {"ase"},
                 "gpaw": {"gpaw"}, "phonopy": {"phonopy"}, "spglib": {"spglib"}, "dftd3": {"dftd3-python"},
                 "mace": {"mace-torch"}}
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


def module_file(module: str) -> Path | None:
    """The source file of an mlepi module or package (a dotted name), None if ``module`` is not one."""
    parts = module.split(".")[1:]
    for path in (SRC.joinpath(*parts).with_suffix(".py"), SRC.joinpath(*parts, "__init__.py")):
        if parts and path.exists():
            return path
    return SRC / "__init__.py" if module == "mlepi" else None


def mlepi_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Top-level third-party imports of an mlepi module and of every mlepi module it imports, anywhere in it
    (inside functions too: an optional package a command needs must be in its rule's environment)."""
    seen = set() if seen is None else seen
    if module in seen:
        return set()
    seen.add(module)
    third_party = set()
    for node in ast.walk(ast.parse(module_file(module).read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # a name imported from an mlepi package may be a module of it or an object in it
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "mlepi":
                if module_file(name) is not None:
                    third_party |= mlepi_imports(name, seen)
            elif name.split(".")[0] not in sys.stdlib_module_names:
                third_party.add(name.split(".")[0])
    return third_party


def command_modules(subcommand: str) -> set[str]:
    """The mlepi modules ``mlepi <subcommand>`` imports: the CLI and the stage module it dispatches to."""
    return {"mlepi.cli", STAGE_MODULES[subcommand]}


def test_imports_are_followed_through_the_subpackages():
    """The check below is only as good as this: a stage's GPAW and torch imports are seen."""
    assert {"gpaw", "numpy"} <= mlepi_imports("mlepi.dft.scf")
    assert {"torch", "torch_geometric", "phonopy"} <= mlepi_imports("mlepi.ml.phonons_ml")
    assert "mace" in mlepi_imports("mlepi.evaluation.peers")


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
    needed = {m for sub in subcommands for m in command_modules(sub)}
    imports = set().union(*(mlepi_imports(m) for m in needed))
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
