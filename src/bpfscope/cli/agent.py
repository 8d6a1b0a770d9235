"""`bpfscope agent [--config agent.yaml]`: runs tools together and serves their metrics for
Prometheus (and pushes them over OTLP when configured).

After attaching, the agent keeps no capability in effect; it keeps in its permitted set only those
it needs to load again on SIGHUP (`--keep-caps` keeps others in effect). SIGTERM or Ctrl-C:
detach and exit; SIGHUP: read the config again, keeping the counters."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Optional

from ..agent import caps
from ..agent.agent import Agent, ReloadError, check_custom
from ..agent.config import DEFAULT_LISTEN, AgentConfig, ConfigError, OtlpConfig, load_config, parse_config
from ..errors import BpfscopeError
from ..tools._base import positive_float

if TYPE_CHECKING:
    from ..agent.otlp import OtlpExporter

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # stop, stop, reload
_FOREVER = 86400.0  # seconds: sigtimedwait's wait when there is no --duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="agent.yaml (default: packets on the default route's "
                        "interface, file opens, execs)")
    parser.add_argument("--listen", metavar="ADDR:PORT", help="serve /metrics here (default: the config's "
                        f"listen, {DEFAULT_LISTEN})")
    parser.add_argument("--keep-pins", action="store_true",
                        help="leave the counters pinned at exit, so the next agent carries them on")
    parser.add_argument("--keep-caps", metavar="CAPS", default="none", type=_capabilities,
                        help="capabilities to keep in effect after attaching, as CAP_SYS_PTRACE,CAP_SYSLOG "
                        "(default: none)")
    parser.add_argument("--check", action="store_true", help="check the config and exit")
    parser.add_argument("--duration", type=positive_float, metavar="SECONDS", help="stop after this long")


def _capabilities(text: str) -> frozenset[int]:
    try:
        return caps.parse_caps(text)
    except BpfscopeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _config(args: argparse.Namespace) -> AgentConfig:
    config = load_config(args.config)
    if args.listen:
        # Checked as the file's own `listen` would be.
        listen = parse_config({"listen": args.listen, "tools": {"opens": True}}, source="--listen").listen
        config = dataclasses.replace(config, listen=listen)
    return config


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(format="bpfscope agent: %(message)s", level=logging.INFO, stream=sys.stderr)
    config = _config(args)
    if args.check:
        check_custom(config)
        print(f"{args.config or 'default config'}: ok: {_describe(config)}")
        return 0
    agent = Agent(config, keep_pins=args.keep_pins)
    otlp = _Otlp(agent)
    dropped = False
    # The signals wait in the kernel until the main thread takes them, so at rest it sleeps rather than
    # polls; blocked before any thread starts, as threads inherit the mask.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        agent.start()
        caps.drop_capabilities(keep_effective=args.keep_caps, keep_permitted=caps.RELOAD_CAPS)
        dropped = True
        agent.serve()
        otlp.update(config.otlp)
        logging.info("serving http://%s/metrics: %s", config.listen, _describe(config))
        end = time.monotonic() + args.duration if args.duration else None
        while True:
            left = end - time.monotonic() if end is not None else _FOREVER
            received = signal.sigtimedwait(_SIGNALS, left) if left > 0 else None
            if received is None or received.si_signo != signal.SIGHUP:
                break
            _reload(agent, otlp, args)
    finally:
        otlp.stop()
        # Detaching needs no capability with links; tc filters of clsact (kernels before 6.6) need NET_ADMIN.
        with caps.effective(caps.RELOAD_CAPS) if dropped else contextlib.nullcontext():
            agent.stop()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return 0


class _Otlp:
    """The OTLP exporter, when the config has one: started, replaced on a reload that changes it,
    and stopped with a last export that may not hold up a SIGTERM's detach for long."""

    FLUSH_SECONDS = 0.3

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._config: Optional[OtlpConfig] = None
        self._exporter: Optional[OtlpExporter] = None

    def update(self, config: Optional[OtlpConfig]) -> None:
        if config == self._config:
            return
        self.stop()
        if config is not None:
            from ..agent.otlp import OtlpExporter

            self._exporter = OtlpExporter(self._agent.registry, config.endpoint, interval=config.interval,
                                          headers=dict(config.headers))
            self._exporter.start()
        self._config = config

    def stop(self) -> None:
        exporter, self._exporter, self._config = self._exporter, None, None
        if exporter is not None:
            # A collector that is slow or gone must not keep the programs attached: the last export
            # gets FLUSH_SECONDS, then goes on (or not) in a daemon thread.
            flushing = threading.Thread(target=exporter.stop, name="bpfscope-otlp-flush", daemon=True)
            flushing.start()
            flushing.join(self.FLUSH_SECONDS)


def _reload(agent: Agent, otlp: _Otlp, args: argparse.Namespace) -> None:
    """A config that does not load leaves the running one in place; the error is one line. If the
    running one cannot be opened again either, the agent stops (ReloadError)."""
    try:
        config = _config(args)
        agent.reload(config, privileged=lambda: caps.effective(caps.RELOAD_CAPS))
    except ReloadError:
        raise
    except (ConfigError, BpfscopeError, OSError) as exc:
        logging.error("reload failed, still running the previous config: %s", exc)
        return
    otlp.update(config.otlp)
    logging.info("reloaded: %s", _describe(config))


def _describe(config: AgentConfig) -> str:
    parts: list[Optional[str]] = [
        *(f"{t.key}({', '.join(t.on or (i.name for i in t.instances))})" if t.on or t.instances[0].name else t.key
          for t in config.tools),
        *(f"custom({c.object.name})" for c in config.custom),
    ]
    return ", ".join(p for p in parts if p)
