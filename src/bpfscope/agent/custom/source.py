"""A custom program as an agent source: built, checked, pinned, loaded and attached at open, its maps
read at each scrape."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from prometheus_client.core import Metric

from ...errors import BpfscopeError
from ...link import Link
from ...maps import Map, PerCpuHashMap
from ...object import Object, ObjectSpec
from ..config import CustomConfig
from ..containers import ContainerResolver
from ..source import Source
from ..sources import pin_subdir
from .cache import basename, build_cached
from .families import Exported
from .labels import Kallsyms, Label, converter
from .spec import MetricsSpec, load_metrics

__all__ = ["CustomProgram"]


class CustomProgram(Source):
    """A user's program as an agent source: `open()` builds (a .bpf.c), checks the metrics YAML
    against the object's BTF, pins the maps it reads, loads and attaches; `collect()` reads each of
    those maps once per scrape, in one batch."""

    def __init__(self, config: CustomConfig, pin_dir: str, *, resolver: Optional[ContainerResolver] = None,
                 cache_dir: Optional[Path] = None) -> None:
        super().__init__(pin_dir)
        self.config = config
        self.name = basename(config.object)
        self.resolver = resolver
        self.cache_dir = cache_dir
        self._obj: Optional[Object] = None
        self._links: list[Link] = []
        self._exported: list[Exported] = []
        self._scrape = threading.Lock()  # Prometheus and OTLP may scrape at once; label caches are shared

    @property
    def maps_pin_dir(self) -> str:
        """Where the maps the metrics read are pinned."""
        return pin_subdir(self.pin_dir, self.name)

    def open(self) -> None:
        if self._obj is not None:
            raise BpfscopeError(errno.EBUSY, f"custom program {self.name} is already open")
        source = self.config.object
        spec = ObjectSpec.open(build_cached(source, self.cache_dir) if source.name.endswith(".c") else source)
        fresh: list[str] = []  # pins this open makes (not taken over): gone again if it fails
        try:
            metrics = load_metrics(self.config.metrics, spec, name=self.name)
            exported = self._exporters(metrics)
            for name in metrics.maps:
                pin = os.path.join(self.maps_pin_dir, name)
                if not spec.maps[name].pin_to(pin):
                    fresh.append(pin)
            obj = spec.load()
        except BaseException:
            spec.close()
            self._unpin(fresh)
            raise
        links: list[Link] = []
        try:
            for program, attach in metrics.plans:
                links.append(attach(obj.programs[program]))
        except BaseException:
            _detach(links)
            obj.close()
            self._unpin(fresh)
            raise
        self._obj, self._links, self._exported = obj, links, exported

    def _exporters(self, metrics: MetricsSpec) -> list[Exported]:
        decoders = {label.decoder for metric in metrics.metrics for label in metric.labels}
        kallsyms = Kallsyms.read() if "ksym" in decoders else None
        resolver = self.resolver or (ContainerResolver() if "cgroup" in decoders else None)
        return [
            Exported(metric, [Label(label, converter(label, kallsyms, resolver),
                                      remember_empty=label.decoder != "cgroup") for label in metric.labels])
            for metric in metrics.metrics
        ]

    def _unpin(self, pins: list[str]) -> None:
        for pin in pins:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pin)
        with contextlib.suppress(OSError):
            os.rmdir(self.maps_pin_dir)  # only if nothing else is pinned there

    def collect(self) -> Iterator[Metric]:
        obj = self._obj
        if obj is None:
            raise BpfscopeError(errno.EBADF, f"custom program {self.name} is not open")
        batches: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
        families: list[Metric] = []
        with self._scrape:
            for exported in self._exported:
                name = exported.spec.map
                if name not in batches:
                    batches[name] = _read(obj.maps[name])
                families.append(exported.family(*batches[name]))
        yield from families

    def close(self) -> None:
        """Detaches and closes; the pins stay (the agent removes its pin directory when it is done)."""
        links, self._links = self._links, []
        _detach(links)
        obj, self._obj = self._obj, None
        if obj is not None:
            obj.close()
        self._exported = []


def _read(m: Map) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return m.lookup_batch_sum() if isinstance(m, PerCpuHashMap) else m.lookup_batch()


def _detach(links: list[Link]) -> None:
    for link in reversed(links):
        with contextlib.suppress(OSError):  # one that cannot detach (its interface gone) must not hold up the rest
            link.close()
