"""Exceptions that carry their exit code, so every entry point maps failures the same way."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    PROBLEMS = 1
    USAGE = 2
    NEEDS_PERSON = 3


class CoderctlError(Exception):
    """An expected failure: printed as one line, never as a traceback (unless --debug)."""

    exit_code: ExitCode = ExitCode.PROBLEMS


class UsageError(CoderctlError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """Unreadable or invalid configuration file, profile or kubeconfig."""


class NeedsPersonError(CoderctlError):
    """An operation failed and left state that a person must repair; the message says how."""

    exit_code = ExitCode.NEEDS_PERSON
