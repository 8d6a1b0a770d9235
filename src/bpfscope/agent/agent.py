"""The agent: opens every configured source, serves their metrics on /metrics and their health on
/healthz, drains the streaming ones on a reader thread, and reloads or stops on request.

State lives in maps pinned under the config's `pin_dir`, one directory per source: a restart (or a
reload) takes those maps over, so counters carry on. `stop()` removes the pins unless the agent was
told to keep them. One agent runs per pin directory; it holds a lock on it while it lives."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import threading
from typing import Callable, ContextManager, Iterable, Iterator, Optional
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

from ..__about__ import __version__
from .._privileges import Capability, missing_capabilities
from ..errors import BpfscopeError
from ..link import TC_LEASES_ENV
from ..pin import PIN_ROOT, ensure_pin_dir
from ..tools import _registry as registry
from .config import AgentConfig
from .containers import ContainerResolver
from .server import serve_http
from .source import Source
from .sources import ToolSource, pin_subdir

__all__ = ["Agent", "ReloadError", "build_sources", "check_custom"]

log = logging.getLogger("bpfscope.agent")

# The directories build_sources makes under the pin directory (pin_subdir names): `<key>-<instance>` for a
# tool that runs once per interface or per item of a list, else `<key>`; and `custom-<name>` for a program
# of the user's.
_OWN_PIN_DIR = re.compile("^(?:{})".format("|".join(
    [f"{tool.AGENT_KEY}-" if tool.per_interface() or tool.AGENT_INSTANCES else f"{tool.AGENT_KEY}$"
     for tool in registry.all_tools() if tool.AGENT_KEY]
    + ["custom-"])))
_PUMP_MS = 200  # the reader thread's longest wait, so stop() is heard within it


def build_sources(config: AgentConfig, resolver: Optional[ContainerResolver]) -> list[Source]:
    """One Source per thing the config enables, each with its own pin directory; nothing opened."""
    pins = config.pin_dir
    sources: list[Source] = []
    for tool in config.tools:
        tool_class = registry.tool_class(tool.name)
        for instance in tool.instances:
            values = instance.values
            if tool_class.declares("ring_bytes"):
                values["ring_bytes"] = config.ring_bytes  # the agent's one size for every ring it reads
            pins_of = pin_subdir(pins, tool.key, *([instance.name] if instance.name else []))
            sources.append(ToolSource(tool_class, tool.key, values, pins_of, resolver))
    if config.custom:
        from .custom import CustomProgram  # its build and decoders only when configured

    for custom in config.custom:
        sources.append(CustomProgram(custom, pin_subdir(pins, "custom", custom.object.name.split(".")[0]),
                                     resolver=resolver))
    return sources


def _listed(capabilities: list[Capability]) -> str:
    """"CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"."""
    labels = [cap.label for cap in capabilities]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


class ReloadError(BpfscopeError):
    """A reload failed and the previous config would not open again either: nothing runs."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


def check_custom(config: AgentConfig) -> None:
    """Each custom program's metrics YAML against its object's BTF (built if it is a .bpf.c), and where a
    label decodes kernel symbols, that /proc/kallsyms shows this process their addresses; nothing reaches
    the kernel."""
    if not config.custom:
        return
    from ..object import ObjectSpec
    from .custom import build_cached, load_metrics
    from .custom.labels import Kallsyms

    for custom in config.custom:
        path = build_cached(custom.object) if custom.object.name.endswith(".c") else custom.object
        spec = ObjectSpec.open(path)
        try:
            metrics = load_metrics(custom.metrics, spec)
        finally:
            spec.close()
        if any(label.decoder == "ksym" for metric in metrics.metrics for label in metric.labels):
            Kallsyms.read()


def source_label(source: Source) -> str:
    """The `source` label of a source's series: its pin directory's name, one per instance (flows-eth0)."""
    return os.path.basename(source.pin_dir)


class _Health:
    """What failed at each source's last read (a scrape, or the reader draining its ring), until a read
    of the same kind works again. /healthz and bpfscope_source_up read this, never a map."""

    def __init__(self) -> None:
        self._failures: dict[tuple[Source, str], str] = {}
        self._lock = threading.Lock()

    def failed(self, source: Source, read: str, exc: BaseException) -> None:
        with self._lock:
            self._failures[source, read] = f"{read}: {exc}"

    def worked(self, source: Source, read: str) -> None:
        with self._lock:
            self._failures.pop((source, read), None)

    def of(self, source: Source) -> list[str]:
        with self._lock:
            return [failure for (failed, _), failure in self._failures.items() if failed is source]

    def forget(self) -> None:
        """The sources were replaced (a reload): the new ones start healthy."""
        with self._lock:
            self._failures.clear()


class _Collector:
    """The registry's view of the agent: every source's families, merged by name so two sources
    of one kind (packets on two interfaces) give one family with both series, as the exposition
    format requires. A source that fails to read is logged and left out of that scrape, and its
    bpfscope_source_up is 0."""

    def __init__(self, sources: Callable[[], list[Source]], lock: threading.RLock, health: _Health) -> None:
        self._sources = sources
        self._lock = lock  # held by reload and stop while they swap sources
        self._health = health

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("bpfscope_agent_info", "The bpfscope agent running", labels=["version"])
        info.add_metric([__version__], 1)
        up = GaugeMetricFamily("bpfscope_source_up", "1 if the source's last reads worked (its maps at the last "
                               "scrape, its ring buffer), 0 if one failed", labels=["tool", "source"])
        merged: dict[str, Metric] = {info.name: info, up.name: up}
        with self._lock:
            for source in self._sources():
                try:
                    families = list(source.collect())
                except Exception as exc:  # one source's failure must not cost the others their scrape
                    log.warning("%s: cannot read its maps: %s", source.name, exc)
                    self._health.failed(source, "cannot read its maps", exc)
                    families = []
                else:
                    self._health.worked(source, "cannot read its maps")
                up.add_metric([source.name, source_label(source)], 0 if self._health.of(source) else 1)
                for family in families:
                    known = merged.get(family.name)
                    if known is None:
                        merged[family.name] = family
                    elif known.type == family.type:
                        known.samples.extend(family.samples)
                    else:
                        log.warning("%s: %s is already a %s, not a %s: left out", source.name, family.name,
                                    known.type, family.type)
        yield from merged.values()


class Agent:
    """`agent.start()` opens everything (all or nothing); `serve()` starts the reader thread and the
    HTTP server; `reload(config)` swaps sources keeping their counters; `stop()` detaches everything.
    start() and serve() are two steps so that capabilities can be dropped between them: each thread
    has its own, and threads started later inherit the dropped set."""

    def __init__(self, config: AgentConfig, *, keep_pins: bool = False) -> None:
        self.config = config
        self.keep_pins = keep_pins
        self.registry = CollectorRegistry(auto_describe=False)
        self._sources_lock = threading.RLock()
        self._health = _Health()
        self.registry.register(_Collector(lambda: self._sources, self._sources_lock, self._health))
        ProcessCollector(registry=self.registry)  # process_*: the agent's own CPU, memory and fds
        self._sources: list[Source] = []
        self._resolver: Optional[ContainerResolver] = None
        self._lock_fd = -1
        self._owns_pins = False  # false while pins an earlier run kept are not yet ours to remove
        self._server: Optional[WSGIServer] = None
        self._reader: Optional[threading.Thread] = None
        self._reading = threading.Event()

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(self._sources)

    def start(self) -> None:
        """Locks the pin directory and opens every source; fails with nothing attached if any
        source fails to open."""
        try:
            self._check_capabilities()
            self._lock_pins()
            self._open(self.config)
        except BaseException:
            self.stop()
            raise

    def serve(self) -> None:
        """Starts draining the streaming sources and serving /metrics and /healthz."""
        try:
            self._start_reader()
            self._serve()
            self._owns_pins = True
        except BaseException:
            self.stop()
            raise

    def _check_capabilities(self) -> None:
        """One line naming what the process lacks, before anything is made: what its tools declare, and
        CAP_SYS_ADMIN for bpffs and the pins (how bpffs happens to be mounted must not decide the message)."""
        needed = [Capability.BPF, Capability.PERFMON, Capability.NET_ADMIN, Capability.SYS_ADMIN]
        for tool in self.config.tools:
            needed += [cap for cap in registry.tool_class(tool.name).CAPABILITIES if cap not in needed]
        missing = missing_capabilities(needed)
        if missing:
            raise BpfscopeError(errno.EPERM, f"the agent needs root, or {_listed(needed)}; this process lacks "
                                f"{_listed(missing)}")

    def _lock_pins(self) -> None:
        pins = self.config.pin_dir
        try:
            ensure_pin_dir(os.path.join(pins, "x"))
            os.makedirs(pins, exist_ok=True)
        except PermissionError as exc:  # the capabilities were checked: bpffs refused (a name with a dot, its mode)
            raise BpfscopeError(errno.EPERM, f"cannot make the agent's pins at {pins}: {exc.strerror}") from None
        self._lock_fd = os.open(pins, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise BpfscopeError(errno.EBUSY, f"another agent runs with its pins at {pins}") from None
        self._owns_pins = not os.listdir(pins)  # a failed start removes only pins it made itself

    def _open(self, config: AgentConfig) -> None:
        if not config.containers:
            self._resolver = None
        elif self._resolver is None or self._resolver.max_containers != config.max_containers:
            try:
                self._resolver = ContainerResolver(config.max_containers)  # else kept: labels stay as they were
            except BpfscopeError as exc:
                log.warning("no container labels: %s", exc)
                self._resolver = None
        # The one place bpfscope.link reads it from, for the agent's tc tools and any bpfscope it starts.
        os.environ[TC_LEASES_ENV] = config.tc_leases
        sources = build_sources(config, self._resolver)
        opened: list[Source] = []
        try:
            for source in sources:
                source.open()
                opened.append(source)
        except BaseException:
            _close_all(opened)
            raise
        self._remove_stale_pins(sources)
        self._health.forget()
        self._sources = sources

    def unhealthy(self) -> list[str]:
        """What is wrong, one entry per failed source (`flows-eth0: cannot read its maps: ...`); [] when
        every source is open and its last reads worked. Reads no map: cheap enough for every probe."""
        sources = self._sources  # not under the lock: a probe must not wait for a reload
        if not sources:
            return ["no source is open"]
        failures = [(source_label(source), self._health.of(source)) for source in sources]
        return [f"{label}: {', '.join(failed)}" for label, failed in failures if failed]

    def _remove_stale_pins(self, sources: Iterable[Source]) -> None:
        """Pins of sources the config no longer has: their counts are not wanted any more."""
        wanted = {os.path.relpath(s.pin_dir, self.config.pin_dir).split(os.sep)[0] for s in sources}
        self._remove_own_pins(keep=wanted)

    def _remove_own_pins(self, keep: Iterable[str] = ()) -> None:
        """Removes the source directories the agent makes in its pin directory, and that directory
        once empty; anything else there is someone else's and stays."""
        pins, kept = self.config.pin_dir, set(keep)
        for name in os.listdir(pins):
            if _OWN_PIN_DIR.match(name) and name not in kept:
                shutil.rmtree(os.path.join(pins, name), ignore_errors=True)
        for directory in (pins, PIN_ROOT):
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if empty: another tool's pins may still be there

    def _start_reader(self) -> None:
        streaming = [s for s in self._sources if s.streams]
        if not streaming:
            return
        self._reading.set()

        def read() -> None:
            wait = max(1, _PUMP_MS // len(streaming))
            while self._reading.is_set():
                for source in streaming:
                    try:
                        source.pump(wait)
                    except OSError as exc:
                        log.warning("%s: cannot read its ring buffer: %s", source.name, exc)
                        self._health.failed(source, "cannot read its ring buffer", exc)
                    else:
                        self._health.worked(source, "cannot read its ring buffer")

        self._reader = threading.Thread(target=read, name="bpfscope-agent-reader", daemon=True)
        self._reader.start()

    def _stop_reader(self) -> None:
        self._reading.clear()
        if self._reader is not None:
            self._reader.join()
            self._reader = None

    def _serve(self) -> None:
        host, _, port = self.config.listen.rpartition(":")
        try:
            self._server = serve_http(host.strip("[]"), int(port), self.registry, self.unhealthy)
        except OSError as exc:
            raise BpfscopeError(exc.errno or errno.EADDRINUSE,
                                f"cannot listen on {self.config.listen}: {exc.strerror}") from None

    def reload(self, config: AgentConfig,
               privileged: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> None:
        """Closes the sources and opens those of `config` inside `privileged()` (which raises the
        capabilities loading needs); counters carry on through the pins. If the new config fails to
        open, the old one is opened again and the error raised."""
        if config.listen != self.config.listen or config.pin_dir != self.config.pin_dir:
            raise BpfscopeError(errno.EINVAL, "listen and pin_dir cannot change on reload: restart the agent")
        check_custom(config)  # a mistake in a metrics YAML is found before anything is closed
        self._stop_reader()
        try:
            with privileged(), self._sources_lock:
                _close_all(self._sources)
                self._sources = []
                try:
                    self._open(config)
                except BaseException as failed:
                    try:
                        self._open(self.config)
                    except BaseException as again:
                        raise ReloadError(f"{failed}; and the previous config no longer opens: {again}") from None
                    raise
            self.config = config
        finally:
            self._start_reader()  # after privileged(): the thread must not inherit raised capabilities

    def stop(self) -> None:
        """Stops serving and reading, detaches every source, and unpins unless keep_pins."""
        server, self._server = self._server, None
        self._stop_reader()
        with self._sources_lock:  # a scrape under way finishes first; later ones find no source
            sources, self._sources = self._sources, []
        # Side by side: the server's loop notices shutdown only at its next poll (0.5 s), and each
        # tracepoint detach waits for an RCU grace period; together they fit a SIGTERM's second.
        closing = [threading.Thread(target=_close_all, args=([source],)) for source in sources]
        if server is not None:
            closing.append(threading.Thread(target=server.shutdown))
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()
        if server is not None:
            server.server_close()
        if self._lock_fd >= 0:
            if self._owns_pins and not self.keep_pins:
                self._remove_own_pins()
            os.close(self._lock_fd)
            self._lock_fd = -1


def _close_all(sources: Iterable[Source]) -> None:
    for source in reversed(list(sources)):
        try:
            source.close()
        except OSError as exc:  # one that cannot detach (its interface gone) must not hold up the rest
            log.warning("%s: %s", source.name, exc)
