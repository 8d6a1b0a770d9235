"""Programs shipped in two forms in one object: one that needs a kernel feature (the faster), and one
that stands in for it where the kernel lacks the feature. `choose` probes and turns off autoload for
the form this kernel will not get, so every shipped object loads on every supported kernel; what a
tool tells its user about the slower form is up to the tool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import NotSupportedError
from .features import Feature, probe
from .object import ObjectSpec

__all__ = ["VARIANTS", "Variant", "choose"]


@dataclass(frozen=True)
class Variant:
    feature: Feature
    needs: tuple[str, ...]  # the programs that need `feature`
    instead: tuple[str, ...]  # the programs that do the same without it


# By object name (tool_object's).
VARIANTS: dict[str, Variant] = {
    # BPF atomics of Linux 5.12 (compare-and-swap) or a bpf_spin_lock (stripes.bpf.h)
    "guard": Variant(Feature.ATOMICS, ("limit_sources",), ("limit_sources_locked",)),
    "tcmon": Variant(
        Feature.ATOMICS, ("watch_ingress", "watch_egress"), ("watch_ingress_locked", "watch_egress_locked"),
    ),
    # a loop through bpf_loop (5.17), or open-coded and so capped (benchmarks/ringbuf.py)
    "ringbuf_bench": Variant(Feature.BPF_LOOP, ("fill_ring",), ("fill_ring_noloop",)),
    # the syscall's registers read at exit (5.15) or its arguments stashed at entry
    "opensnoop": Variant(
        Feature.TASK_PT_REGS,
        ("exit_open", "exit_openat", "exit_openat2"),
        tuple(f"stash_{hook}_{call}" for call in ("open", "openat", "openat2") for hook in ("enter", "exit")),
    ),
}


def choose(spec: ObjectSpec, name: str) -> Optional[NotSupportedError]:
    """Leaves on the programs of object `name` this kernel can load: None when it has the feature, else
    why not (the stand-ins are loaded). Programs an architecture's object lacks are skipped."""
    variant = VARIANTS.get(name)
    if variant is None:
        return None
    missing = probe(variant.feature)
    for program in variant.needs + variant.instead:
        if program in spec.programs:
            spec.programs[program].autoload = (program in variant.needs) == (missing is None)
    return missing
