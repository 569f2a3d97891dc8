"""The import boundaries of docs/architecture.md, checked on the source: a module that crosses one
fails here with its file, line and import.

- hpo/ (the public, torch-free package both sides share) imports neither torch, service nor
  trainer, not even inside a function.
- trainer/ (the worker) never imports service/ (the server); they meet in hpo.protocol.
- service/ never imports trainer/, except `hpo worker`'s own command, which starts the trainer's
  processes from inside its function in service/cli.py.
- service/domain/ is policy: no FastAPI or Starlette (transport) and no SQLAlchemy (storage).
- The spec package (service/domain/spec/) is used through its public names.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. service.cli
    target: str  # the imported module, e.g. trainer.processes
    line: int
    lazy: bool  # inside a function: imported when it runs, not when the module loads

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "at module level"
        return f"{self.module} (line {self.line}) imports {self.target} {where}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import in the file, relative ones resolved, `if TYPE_CHECKING:` ones included."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child.lineno, inside) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from service.domain import spec` imports service.domain.spec: keep both.
                found.append(Import(module, base, child.lineno, inside))
                found.extend(
                    Import(module, f"{base}.{a.name}", child.lineno, inside) for a in child.names
                )
            visit(child, inside)

    visit(tree, False)
    return found


def within(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def sources(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def crossings(package: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[Import]:
    return [
        imp
        for path in sources(package, root)
        for imp in imports_of(path, root)
        if any(within(imp.target, f) for f in forbidden)
    ]


def test_hpo_imports_neither_torch_nor_the_server_nor_the_worker() -> None:
    assert sources("hpo"), "hpo/ has no modules"
    assert [str(i) for i in crossings("hpo", ("torch", "service", "trainer"))] == []


def test_the_worker_never_imports_the_server() -> None:
    assert [str(i) for i in crossings("trainer", ("service",))] == []


def test_the_server_imports_the_trainer_only_to_start_hpo_worker() -> None:
    allowed = {("service.cli", "trainer"), ("service.cli", "trainer.processes")}
    found = crossings("service", ("trainer",))
    assert [str(i) for i in found if (i.module, i.target) not in allowed or not i.lazy] == []


def test_the_domain_imports_no_web_framework() -> None:
    crossing = crossings("service/domain", ("fastapi", "starlette"))
    assert [str(i) for i in crossing] == []


def test_the_domain_builds_no_sql() -> None:
    assert [str(i) for i in crossings("service/domain", ("sqlalchemy",))] == []


def private_names_imported(path: Path) -> list[str]:
    """`from module import _name` statements in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{module_name(path)} (line {node.lineno}) imports {alias.name} from {node.module}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    ]


def test_the_spec_is_used_through_its_public_names() -> None:
    # Its modules share public names only; the rest of the code imports the package
    # (service.domain.spec) or its public module spec.space, never a private module.
    assert [
        p for path in sources("service/domain/spec") for p in private_names_imported(path)
    ] == []
    outside = [
        str(i)
        for package in ("hpo", "service", "trainer", "tests", "bench")
        for path in sources(package)
        for i in imports_of(path)
        if i.target.startswith("service.domain.spec._")
        and not within(i.module, "service.domain.spec")
    ]
    assert outside == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch\n", ["pkg.mod (line 1) imports torch at module level"]),
        (
            "def f():\n    from ..service import app\n",
            [
                "pkg.mod (line 2) imports service inside a function",
                "pkg.mod (line 2) imports service.app inside a function",
            ],
        ),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch.nn\n",
            ["pkg.mod (line 3) imports torch.nn at module level"],
        ),
        ("import torchvision\nfrom servicex import y\n", []),
    ],
)
def test_the_check_sees_lazy_relative_and_type_checking_imports(
    tmp_path: Path, source: str, expected: list[str]
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(source)
    found = crossings("pkg", ("torch", "service"), root=tmp_path)
    assert [str(i) for i in found] == expected
