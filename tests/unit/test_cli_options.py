"""The argument types and signal helpers the subcommands share (the tools' teardown is tested in
tests/unit/test_tool_base.py)."""

from __future__ import annotations

import argparse
import signal

import pytest

from bpfscope.cli.options import catch_hangup, stop_flag
from bpfscope.tools._base import pid_number, ring_bytes


@pytest.mark.parametrize("text, value", [("4096", 4096), ("8388608", 1 << 23)])
def test_ring_bytes_takes_powers_of_2_from_4096(text, value):
    assert ring_bytes(text) == value


@pytest.mark.parametrize("text, message", [("2048", "power of 2"), ("5000", "power of 2"), ("big", "whole number")])
def test_ring_bytes_refuses(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        ring_bytes(text)


@pytest.mark.parametrize("text, message", [("0", "must be greater than 0"), ("-3", "must be greater than 0"),
                                           ("abc", "is not a process id")])
def test_pid_number_refuses(text, message):
    assert pid_number("1") == 1
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        pid_number(text)


def test_stop_flag_turns_sigterm_and_sigint_into_a_flag_and_restores_the_handlers():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with stop_flag() as flag:
            assert signal.getsignal(signal.SIGHUP) == before[signal.SIGHUP]  # not asked for: left alone
            assert not flag.requested
            signal.raise_signal(sig)
            assert flag.requested and not flag.hangup
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_catch_hangup_records_sighup_apart():
    before = signal.getsignal(signal.SIGHUP)
    with stop_flag() as flag, catch_hangup(flag):
        signal.raise_signal(signal.SIGHUP)
        assert flag.hangup and not flag.requested
    assert signal.getsignal(signal.SIGHUP) == before

