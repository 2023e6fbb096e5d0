"""Torch factories that misbehave (``bench run --model tests.bad_factories:NAME``), for
tests/test_hardening.py: each one is user code that must not take bench down with it."""
from __future__ import annotations

import os
import sys


def exits_3():
    sys.exit(3)


def segfaults():
    import ctypes

    ctypes.string_at(0)


def aborts():
    os.abort()


def raises():
    raise RuntimeError("factory blew up")


def returns_int():
    return 42


def tiny():
    import torch

    return torch.nn.Linear(4, 2)
