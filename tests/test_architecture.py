"""The package's dependency rule, checked over every module's imports (module level *and* inside functions).

Layers, imports pointing down only (docs/architecture.md draws them)::

    cli / compare / runner / report  (and tools/, outside the package)   may import anything but cli
    zoo                              presets: shipped networks wired into the generic classes
    attr, the root package            the methods; never the zoo or the application layer
    generators, objectives, optim,    generic building blocks; never attr, the zoo or the application layer
    metrics, descriptors, interventions,
    visualization, _search
    datasets                          embedded / procedural data; only the private helpers
    _validation, _utils, _io, _config, _safe_pickle   import nothing else from the package

The zoo depends on generators, never the reverse; nothing generic imports the zoo.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "captum_cfx"

APP = {"cli", "compare", "runner", "report", "gallery"}
BOTTOM = {"_validation", "_utils", "_io", "_safe_pickle", "_config"}
MID = {"generators", "objectives", "optim", "metrics", "descriptors", "interventions", "visualization", "_search"}

#: (importer prefix, imported prefix) pairs that the rule allows by design, each with its reason
ALLOWED = {
    # the ground-truth metrics (MNAC, factor changes) read the synthetic worlds' own factor tables
    ("captum_cfx.metrics.ground_truth", "captum_cfx.datasets"),
}


def layer(module: str) -> str:
    """The layer of a dotted module name inside the package."""
    parts = module.split(".")
    if parts == ["captum_cfx"]:
        return "api"  # the root __init__ re-exports attr and the building blocks
    head = parts[1]
    if head in APP:
        return "app"
    if head == "zoo":
        return "zoo"
    if head == "attr":
        return "attr"
    if head == "datasets":
        return "datasets"
    if head in BOTTOM:
        return "bottom"
    if head in MID:
        return "mid"
    raise AssertionError(f"module {module} belongs to no layer: add it to tests/test_architecture.py")


#: what each layer may NOT import
FORBIDDEN = {
    "app": {"cli"},
    "zoo": {"app"},
    "api": {"app", "zoo", "datasets"},
    "attr": {"app", "zoo", "datasets"},
    "mid": {"app", "zoo", "attr", "api", "datasets"},
    "datasets": {"app", "zoo", "attr", "api", "mid"},
    "bottom": {"app", "zoo", "attr", "api", "mid", "datasets"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports(source: str, importer: str, is_package: bool = False) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of a ``captum_cfx`` module anywhere in ``source``.

    ``from captum_cfx import x`` counts as importing ``captum_cfx.x`` when ``x`` is a subpackage or module,
    else the root package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "captum_cfx"]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(importer, is_package, node)
            if mod.split(".")[0] != "captum_cfx":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                rel = Path(*sub.split("."))
                is_mod = (PKG.parent / rel).is_dir() or (PKG.parent / rel).with_suffix(".py").is_file()
                found.append((sub if is_mod else mod, node.lineno))
    return found


def violations(source: str, importer: str, is_package: bool = False) -> list[str]:
    own = layer(importer)
    out = []
    for target, line in package_imports(source, importer, is_package):
        if any(importer.startswith(a) and target.startswith(b) for a, b in ALLOWED):
            continue
        if target.split(".")[:2] == importer.split(".")[:2] and own != "app":
            continue  # within one subpackage (or module)
        bad = layer(target) in FORBIDDEN[own] or (target.startswith("captum_cfx.cli") and importer != "captum_cfx.cli")
        if bad:
            out.append(f"{importer}:{line} ({own}) imports {target} ({layer(target)})")
    return out


def all_modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "weights" not in p.parts)


def test_every_module_follows_the_dependency_rule():
    found = []
    for path in all_modules():
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    # the project's tools (outside the package) use the library, never the command line's internals
    for path in sorted((PKG.parent / "tools").glob("*.py")):
        found += [f"tools/{path.name}:{line} imports {target}"
                  for target, line in package_imports(path.read_text(), f"tools.{path.stem}")
                  if target.startswith("captum_cfx.cli")]
    assert not found, "imports against the dependency rule (docs/architecture.md):\n" + "\n".join(found)


@pytest.mark.parametrize("importer, source", [
    ("captum_cfx.generators.gan", "def f():\n    from captum_cfx.zoo import load_pretrained\n"),
    ("captum_cfx.metrics.realism", "import captum_cfx.zoo._registry\n"),
    ("captum_cfx.attr.latent_ig", "from ..zoo import load_generator\n"),
    ("captum_cfx.attr.latent_ig", "from captum_cfx import zoo\n"),
    ("captum_cfx.objectives", "from captum_cfx import LatentCounterfactualAttack\n"),
    ("captum_cfx._utils", "from captum_cfx.generators.base import Latent\n"),
    ("captum_cfx.compare", "def f():\n    from captum_cfx.cli import choose_targets\n"),
    ("captum_cfx.zoo.presets", "from captum_cfx.runner import RunConfig\n"),
])
def test_the_checker_catches_forbidden_imports(importer, source):
    assert violations(source, importer), f"a forbidden import in {importer} went unnoticed"


@pytest.mark.parametrize("importer, source", [
    ("captum_cfx.zoo._registry", "def f():\n    from captum_cfx import generators\n"),
    ("captum_cfx.attr.latent_ig", "from captum_cfx.generators.base import Latent\n"),
    ("captum_cfx.cli", "from captum_cfx.zoo import load_pretrained\n"),
    ("captum_cfx.generators.gan", "from ..optim import LatentAdam\n"),
])
def test_the_checker_allows_downward_imports(importer, source):
    assert not violations(source, importer)


def test_import_captum_cfx_is_lazy():
    """``import captum_cfx`` loads neither plotting, scipy.ndimage nor Captum's concept module (fresh interpreter)."""
    import json
    import os
    import subprocess
    import sys

    heavy = ["matplotlib.pyplot", "scipy.ndimage", "captum.concept", "captum.attr"]
    code = ("import sys, json, captum_cfx; captum_cfx.__version__; "
            f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": str(PKG.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    # the public names still resolve (on first use) to the classes of their modules
    code = ("import captum_cfx, captum_cfx.attr as a; "
            "assert captum_cfx.LatentCounterfactualAttack is a.LatentCounterfactualAttack; "
            "assert 'GANGenerator' in dir(captum_cfx); "
            "from captum_cfx import VAEGenerator, zoo; print(VAEGenerator.__name__, zoo.__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["VAEGenerator", "captum_cfx.zoo"]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import captum_cfx

        captum_cfx.Nope  # noqa: B018


# ---------------------------------------------------------------------------------------------- code shape
MAX_LINES_IN_ATTR = 80
MAX_POSITIONAL = 4  # self counts; keyword-only after that

#: known violations, each a (module path, qualified name) pair, to be removed as the files are refactored (none
#: today: an entry names the issue that will fix it)
LONG_ALLOWED: set[tuple[str, str]] = set()
WIDE_ALLOWED: set[tuple[str, str]] = set()


def _functions(tree: ast.AST):
    """``(qualified name, node, public)`` of every function and method, nested ones included; public means
    reachable by users: no leading underscore on it, on its class, or on an enclosing function."""
    def walk(node, prefix, public):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.ClassDef):
                yield from walk(ch, f"{prefix}{ch.name}.", public and not ch.name.startswith("_"))
            elif isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                dunder = ch.name.startswith("__") and ch.name.endswith("__")
                pub = public and (dunder or not ch.name.startswith("_"))
                yield f"{prefix}{ch.name}", ch, pub
                yield from walk(ch, f"{prefix}{ch.name}.<locals>.", False)
            else:
                yield from walk(ch, prefix, public)
    yield from walk(tree, "", True)


def _module_is_public(path: Path) -> bool:
    return not any(part.startswith("_") and part != "__init__.py" for part in path.relative_to(PKG).parts)


def test_no_function_in_attr_is_over_80_lines():
    found = []
    for path in sorted((PKG / "attr").rglob("*.py")):
        for name, node, _ in _functions(ast.parse(path.read_text())):
            n = node.end_lineno - node.lineno + 1
            key = (str(path.relative_to(PKG.parent)), name)
            if n > MAX_LINES_IN_ATTR and key not in LONG_ALLOWED:
                found.append(f"{key[0]}:{node.lineno} {name}: {n} lines")
    assert not found, f"functions in captum_cfx/attr/ over {MAX_LINES_IN_ATTR} lines:\n" + "\n".join(found)


def test_no_public_callable_takes_more_than_4_positional_parameters():
    found = []
    for path in all_modules():
        if not _module_is_public(path):
            continue
        for name, node, public in _functions(ast.parse(path.read_text())):
            a = node.args
            n = len(a.posonlyargs) + len(a.args)
            key = (str(path.relative_to(PKG.parent)), name)
            if public and n > MAX_POSITIONAL and key not in WIDE_ALLOWED:
                found.append(f"{key[0]}:{node.lineno} {name}: {n} positional parameters")
    assert not found, (f"public callables with more than {MAX_POSITIONAL} positional parameters (self counts; make the "
                       "rest keyword-only with `*`):\n" + "\n".join(found))


@pytest.mark.parametrize("source, long, wide", [
    ("def f(a, b, c, d, e):\n    pass\n", False, True),
    ("def f(a, b, c, d, *, e):\n    pass\n", False, False),
    ("class A:\n    def m(self, a, b, c, d=1):\n        pass\n", False, True),
    ("class A:\n    def _m(self, a, b, c, d=1):\n        pass\n", False, False),
    ("def f():\n" + "    x = 1\n" * 80, True, False),
])
def test_the_shape_checks_catch_what_they_should(source, long, wide):
    [(name, node, public)] = list(_functions(ast.parse(source)))[-1:]
    assert (node.end_lineno - node.lineno + 1 > MAX_LINES_IN_ATTR) == long
    a = node.args
    assert (public and len(a.posonlyargs) + len(a.args) > MAX_POSITIONAL) == wide


def test_no_mnist_shape_or_network_in_the_generic_layers():
    """No ``(C, 28, 28)`` literal outside the zoo and ``datasets/mnist.py``, and no string naming an MNIST asset
    (``"mnist-oracle"``, ...) in the generic layers: MNIST is wired by the zoo's presets and the CLI's MNIST path."""
    generic = {"attr", "generators", "objectives", "optim", "metrics", "descriptors", "interventions", "_search",
               "visualization"}
    found = []
    for path in all_modules():
        rel = path.relative_to(PKG)
        if rel.parts[0] == "zoo" or rel.as_posix() == "datasets/mnist.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Tuple) and len(node.elts) == 3
                    and all(isinstance(e, ast.Constant) for e in node.elts)
                    and [e.value for e in node.elts][1:] == [28, 28]):
                found.append(f"{rel}:{node.lineno} the MNIST image shape")
            if (rel.parts[0].removesuffix(".py") in generic and isinstance(node, ast.Constant)
                    and isinstance(node.value, str) and "mnist" in node.value.lower() and id(node) not in docstrings):
                found.append(f"{rel}:{node.lineno} {node.value[:40]!r}")
    assert not found, "MNIST wired into a generic module:\n" + "\n".join(found)


def test_the_allow_list_holds_only_live_violations():
    """An entry of LONG_ALLOWED that no longer runs over the limit must leave the list (so it cannot come back)."""
    stale = []
    for rel, name in LONG_ALLOWED:
        found = {n: node for n, node, _ in _functions(ast.parse((PKG.parent / rel).read_text()))}
        node = found.get(name)
        if node is None or node.end_lineno - node.lineno + 1 <= MAX_LINES_IN_ATTR:
            stale.append(f"{rel} {name}")
    assert not stale, "remove from LONG_ALLOWED (fixed or gone):\n" + "\n".join(stale)
