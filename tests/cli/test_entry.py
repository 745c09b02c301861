"""The console script restarts a heavy command once with glibc malloc settings, and nothing else."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from chipq import cli

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(cli.os, "execve", lambda exe, argv, env: seen.append((exe, list(argv), env)))
    for key in [*cli.MALLOC_SETTINGS, "CHIPQ_NO_MALLOC_TUNING"]:
        monkeypatch.delenv(key, raising=False)
    return seen


def test_a_heavy_command_restarts_with_the_settings(calls, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["chipq", "--debug", "compress", "m.pt"])
    cli._with_allocator_settings()
    assert len(calls) == 1
    exe, argv, env = calls[0]
    assert exe == sys.executable and argv == sys.orig_argv
    assert all(env[key] == value for key, value in cli.MALLOC_SETTINGS.items())


@pytest.mark.parametrize("argv,env", [(["chipq", "inspect", "b.blob"], {}), (["chipq", "compress"], {"CHIPQ_NO_MALLOC_TUNING": "1"}),
                                      (["chipq", "compress"], {"MALLOC_TOP_PAD_": "0"})])  # fmt: skip
def test_no_restart_for_light_commands_when_turned_off_or_already_set(calls, monkeypatch, argv, env):
    monkeypatch.setattr(sys, "argv", argv)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli._with_allocator_settings()
    assert calls == []


def test_the_installed_script_runs_a_heavy_command_once(tmp_path):
    """Through the real entry point: the restarted process runs the command (one refusal line)."""
    script = "import sys; from chipq.cli import entry; sys.argv = ['chipq', 'verify', sys.argv[1]]; entry()"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "none.blob")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("error:") == 1, done.stderr


def test_no_restart_under_a_memory_limit(calls, monkeypatch):
    """An address-space limit (the hostile suite runs every command under one) keeps the defaults."""
    import resource

    monkeypatch.setattr(sys, "argv", ["chipq", "verify", "b.blob"])
    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (3 << 30, 3 << 30) if kind == resource.RLIMIT_AS else real(kind))
    cli._with_allocator_settings()
    assert calls == []
