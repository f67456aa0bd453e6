"""LoRA trainable-parameter counts, by peft's own rules, without importing peft.

peft (0.21) adapts a module when its full name equals a target, ends with "." + target, or (target
given as one string) fully matches it as a regex; "all-linear" means every Linear/Conv1D except the
output head. Each adapted module gets A (r x in) and B (out x r): r * (in + out) parameters; DoRA
adds a magnitude vector of `out`. bias="all" also trains every bias, "lora_only" the adapted modules'
biases. tests/test_estimate_lora.py checks these counts against peft's `get_nb_trainable_parameters`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from lmtune.errors import UserError
from lmtune.estimate.shapes import LinearInfo, ModelShape


@dataclass(frozen=True)
class LoraSpec:
    r: int = 16
    targets: tuple[str, ...] | str = "all-linear"
    dropout: float = 0.05
    use_dora: bool = False
    bias: str = "none"             # none | all | lora_only

    @staticmethod
    def from_targets(value: str | list[str] | tuple[str, ...] | None, **kw) -> "LoraSpec":
        """Normalise CLI/config targets: 'all-linear', 'q_proj,v_proj', a list, or one regex string."""
        if value is None or value == "all-linear":
            return LoraSpec(targets="all-linear", **kw)
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            is_regex = len(parts) == 1 and any(c in parts[0] for c in "*[]()|\\^$+?")
            return LoraSpec(targets=parts[0] if is_regex else tuple(parts), **kw)
        return LoraSpec(targets=tuple(value), **kw)


def _matches(spec: LoraSpec, name: str) -> bool:
    if isinstance(spec.targets, str):
        return re.fullmatch(spec.targets, name) is not None
    return name in spec.targets or any(name.endswith("." + t) for t in spec.targets)


def target_linears(shape: ModelShape, spec: LoraSpec) -> list[LinearInfo]:
    """The modules peft would adapt; raises UserError (like peft) when nothing matches."""
    if spec.targets == "all-linear":
        found = [lin for lin in shape.linears if not lin.is_head]
    else:
        found = [lin for lin in shape.linears if _matches(spec, lin.name)]
    if not found:
        names = sorted({lin.name.rsplit(".", 1)[-1] for lin in shape.linears if not lin.is_head})
        raise UserError(f"--lora-targets {spec.targets}: no module of {shape.source} matches",
                        [f"linear layers in this model: {', '.join(names)}", "or use all-linear"])
    return found


@dataclass
class LoraCount:
    trainable: int
    adapted: list[LinearInfo] = field(default_factory=list)
    tensors: list[tuple[int, ...]] = field(default_factory=list)   # shapes, for optimizer-state rules


def count_lora(shape: ModelShape, spec: LoraSpec) -> LoraCount:
    """Trainable parameters (and their tensor shapes) of `spec` on `shape`, as peft would report."""
    adapted = target_linears(shape, spec)
    tensors: list[tuple[int, ...]] = []
    for lin in adapted:
        tensors += [(spec.r, lin.in_features), (lin.out_features, spec.r)]
        if spec.use_dora:
            tensors.append((lin.out_features,))
    if spec.bias == "all":
        tensors += [s for n, s in shape.param_shapes if n.endswith("bias")]
    elif spec.bias == "lora_only":
        tensors += [(lin.bias,) for lin in adapted if lin.bias]
    return LoraCount(sum(math.prod(s) for s in tensors), adapted, tensors)
