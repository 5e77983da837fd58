"""The package's layout (issue 28): one error base that imports nothing, subpackages in layers with no import loop,
imports inside functions only where a heavy optional package asks for it, and every dotted ``mlepi`` name in the
docs and docstrings importable (so a move cannot leave a stale reference behind)."""

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mlepi"

# Lower layers first: a module imports from its own layer or below, never above.
LAYERS = [{"errors", "units"}, {"config"}, {"geometry"}, {"formats"}, {"figures"}, {"electrons"}, {"dft"},
          {"vibrations"}, {"ml"}, {"evaluation"}, {"cli"}]

# Imports inside functions, each for a reason (module -> what it imports there, and why).
LATE_IMPORTS = {
    # GPAW picks its MPI backend when gpaw.mpi is first imported: after mpi.prepare() has set it.
    ("mlepi.dft.mpi", "gpaw.mpi"),
    # GPAW is optional for inference (--overlap model, the calculator, the Fermi-level workers).
    ("mlepi.ml.completion", "mlepi.dft.matrices"),
    # The inference benchmark's fresh processes import the module; their baseline memory should not hold GPAW.
    ("mlepi.evaluation.performance", "mlepi.dft.scf"),
    # torch (1-4 s) only for .pt files: `mlepi inspect` of frames and JSON files does not wait for it.
    ("mlepi.formats.provenance", "mlepi.formats.torch_files"),
    # MACE (mace-torch) is optional: only `mlepi peers` needs it, and says so when it is missing.
    ("mlepi.evaluation.peers", "mace"),
    ("mlepi.evaluation.peers", "mace.calculators"),
}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


def imported(node) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            raise AssertionError(f"relative import of {node.module} at line {node.lineno}: import mlepi.… absolutely")
        base = node.module
        # `from mlepi.<package> import <name>` imports the module <package>.<name> when there is one
        return [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base
                for a in node.names] if base.startswith("mlepi") else [base]
    return [a.name for a in node.names]


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else module
    return next(k for k, names in enumerate(LAYERS) if part in names)


def top_level_imports(tree) -> list[str]:
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out += imported(node)
    return out


def test_errors_base_imports_nothing():
    tree = modules()["mlepi.errors"]
    assert not top_level_imports(tree)
    from mlepi.errors import MlepiError

    assert issubclass(MlepiError, Exception)


def test_every_user_error_derives_from_the_base():
    """The CLI catches MlepiError: every exception class a module declares is one (its message is for the user)."""
    from mlepi.errors import MlepiError

    for name, tree in modules().items():
        module = importlib.import_module(name)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                assert issubclass(getattr(module, node.name), MlepiError), f"{name}.{node.name}"


def test_layers_and_no_import_loop():
    trees = modules()
    graph = {}
    for name, tree in trees.items():
        deps = {d for d in top_level_imports(tree) if d.startswith("mlepi.") and d != name}
        graph[name] = {d for d in deps if d in trees}
        for dep in graph[name]:
            assert layer(dep) <= layer(name), f"{name} imports {dep}, a higher layer"
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in graph[node]:
            if state.get(dep) == "open":
                raise AssertionError("import loop: " + " -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def test_imports_inside_functions_are_only_the_listed_ones():
    late = set()
    for name, tree in modules().items():
        if name == "mlepi.cli":  # imports the stage of the command it runs (importlib, STAGE_MODULES)
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        late |= {(name, dep) for dep in imported(inner)}
    assert late == LATE_IMPORTS


def _schema_names() -> set[str]:
    """File-format names such as ``mlepi.formats.frames``: strings, not modules."""
    names = set()
    for tree in modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str) and re.fullmatch(r"mlepi\.\w+", node.value.value) \
                    and any(isinstance(t, ast.Name) and t.id.endswith("SCHEMA") for t in node.targets):
                names.add(node.value.value)
    return names


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("where", ["src", "docs", "README.md", "benchmarks", "tests", "workflow"])
def test_every_named_mlepi_object_exists(where):
    schema_names = _schema_names()
    # benchmarks/NOTES.md is a dated log: each section names modules where they were then (§25 maps the moves).
    paths = [ROOT / where] if (ROOT / where).is_file() else sorted(
        p for p in (ROOT / where).rglob("*") if p.suffix in (".py", ".md", ".smk", ".rst") and p.name != "NOTES.md")
    stale = []
    for path in paths:
        for m in re.finditer(r"(?<![\w/.-])mlepi(?:\.[A-Za-z_]\w*)+", path.read_text()):
            dotted = m.group(0).rstrip(".")
            if dotted in schema_names or dotted.startswith("mlepi.cli:"):
                continue
            if not _resolves(dotted):
                stale.append(f"{path.relative_to(ROOT)}: {dotted}")
    assert not stale, "\n".join(stale)
