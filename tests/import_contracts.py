"""An import-linter contract the built-in types cannot express: imports inside functions.

The floor plan (`pyproject.toml`, `[tool.importlinter]`) lets a module import another only at
its top, where the import graph shows it: an import inside a function is most often a cycle in
hiding. The one exception is a heavy library a run may never need (matplotlib before the first
figure, grain's worker processes for data that fits in memory), named in the contract's `lazy`
list, the one place they are listed.
"""

from __future__ import annotations

import ast
import importlib.util
import os

from importlinter import Contract, ContractCheck, fields, output


def _module_files(package: str) -> dict[str, str]:
    """`{module name: file}` of every module of a top-level package (nothing is imported)."""
    spec = importlib.util.find_spec(package)
    root = spec.submodule_search_locations[0]
    base = os.path.dirname(root)
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, base)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _inner_imports(path: str) -> list[tuple[int, str]]:
    """`(line, imported module)` of each import statement inside a function of the file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    inner = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                inner += [(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                inner.append((node.lineno, "." * node.level + module))
    return sorted(set(inner))


class FunctionImportsContract(Contract):
    """Imports inside functions: none of the project's modules, only the `lazy` libraries."""

    type_name = "function_imports"

    lazy = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        packages = self.session_options["root_packages"]
        allowed = set(self.lazy)
        broken = []
        for package in packages:
            for module, path in sorted(_module_files(package).items()):
                for line, imported in _inner_imports(path):
                    top = imported.split(".")[0]
                    if imported.startswith(".") or top in packages or top not in allowed:
                        broken.append(f"{module}:{line} imports {imported} inside a function")
        return ContractCheck(kept=not broken, warnings=[], metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["broken"]:
            output.print_error(line, bold=False)
        output.new_line()
        output.print(
            "Import project modules at the top of the module (a cycle behind it is a sign the "
            "code wants another home); a heavy optional library may be imported lazily once it "
            "is listed in this contract's `lazy`."
        )
