"""Programs shipped in two forms in one object: one that needs a kernel feature (the faster), and one
that stands in for it where the kernel lacks the feature. `choose` probes and turns off autoload for
the form this kernel will not get, so every shipped object loads on every supported kernel; what a
tool tells its user about the slower form is up to the tool. A tool declares its Variant itself
(Tool.VARIANT); core modules know no tool's name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .errors import NotSupportedError
from .features import Feature, probe
from .object import ObjectSpec

__all__ = ["VARIANTS", "Variant", "choose"]


@dataclass(frozen=True)
class Variant:
    feature: Feature
    needs: tuple[str, ...]  # the programs that need `feature`
    instead: tuple[str, ...]  # the programs that do the same without it


# By object name (tool_object's): the benchmark's, which stays with the benchmarks. A tool declares its
# own (Tool.VARIANT).
VARIANTS: dict[str, Variant] = {
    # a loop through bpf_loop (5.17), or open-coded and so capped (benchmarks/ringbuf.py)
    "ringbuf_bench": Variant(Feature.BPF_LOOP, ("fill_ring",), ("fill_ring_noloop",)),
}


def choose(spec: ObjectSpec, variant: Union[Variant, str]) -> Optional[NotSupportedError]:
    """Leaves on the programs of `variant` (or of VARIANTS' entry for object `variant`) this kernel can
    load: None when it has the feature, else why not (the stand-ins are loaded). Programs an
    architecture's object lacks are skipped."""
    if isinstance(variant, str):
        known = VARIANTS.get(variant)
        if known is None:
            return None
        variant = known
    missing = probe(variant.feature)
    for program in variant.needs + variant.instead:
        if program in spec.programs:
            spec.programs[program].autoload = (program in variant.needs) == (missing is None)
    return missing
