"""The built-in workloads, one entry each: the builder, the images, the options and their defaults.

A new built-in is a file in harness/training/models/ with `build(settings) -> nn.Module` and one
entry here. Nothing here imports torch: planning reads this table, only training builds the model.

A built-in's code is part of its cells' identity: a hash of its builder's source, read as Python
(comments, docstrings and layout do not count). The MLPs are the exception that keeps the
committed results' cell ids: while their code hashes to `ran_sha256`, the source their committed
cells ran, the identity leaves the code out; once it differs, the hash joins the identity and
their cells get new ids.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Builtin:
    name: str
    builder: str  # MODULE:NAME of build(settings: CellSettings) -> torch.nn.Module
    dataset: str | None = None  # the images it trains on; None: data.dataset
    defaults: dict[str, int] = field(default_factory=dict)  # its options, merged into workload.options
    ran_sha256: str | None = None  # the builder's source hash that committed cells ran (see above)

    @property
    def source(self) -> Path:
        module = self.builder.split(":")[0]
        return PACKAGE.joinpath(*module.removeprefix("harness.").split(".")).with_suffix(".py")


# mlp.py as the committed results ran it (the MLP code of every results/ folder)
MLP_SHA256 = "01d737d8092a7d64"

REGISTRY: dict[str, Builtin] = {b.name: b for b in (
    # the motivating case's 784-500-500-500-10; its settings are the `model:` section
    Builtin(name="mnist_mlp", builder="harness.training.models.mlp:build", ran_sha256=MLP_SHA256),
    Builtin(name="fashion_mlp", builder="harness.training.models.mlp:build", dataset="fashion_mnist",
            ran_sha256=MLP_SHA256),
    Builtin(name="mnist_conv", builder="harness.training.models.conv:build", defaults={"channels": 16, "hidden": 128}),
)}
NAMES = tuple(REGISTRY)
DEFAULT = "mnist_mlp"


def source_sha256(builtin: Builtin) -> str:
    """The builder file's code as Python sees it: its syntax tree without docstrings."""
    tree = ast.parse(builtin.source.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:16]
