"""Shared fixtures; ``tests/`` is on sys.path, so tests import ``oracle`` directly."""

import os
from pathlib import Path

import numpy as np
import pytest

import fastbn

#: Where the fastbn under test lives (site-packages when installed, else the checkout).
FASTBN_ROOT = str(Path(fastbn.__file__).resolve().parent.parent)

#: A working directory for subprocesses with no ``fastbn`` folder in it, so that
#: they import the same fastbn as this process, never a source checkout beside it.
SUBPROCESS_CWD = str(Path(__file__).resolve().parent)


def subprocess_env(**extra):
    """This environment with the fastbn under test first on ``PYTHONPATH``."""
    path = os.pathsep.join(filter(None, [FASTBN_ROOT, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **extra)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


#: (shape, axis) pairs covering both kernel families, channels-last, C=1,
#: spatial size 1, rank 2 to 5 and a channel axis in the middle.
LAYOUTS = [
    ((6, 3), 1),
    ((5, 4, 7), 1),
    ((3, 4, 5, 6), 1),
    ((3, 5, 6, 4), -1),
    ((2, 3, 2, 3, 4), 1),
    ((4, 1, 3, 3), 1),
    ((7, 5, 1, 1), 1),
    ((3, 4, 5, 2), 2),
    ((300, 2, 9), 1),
    ((2, 3, 5000), 1),
]


def tolerance(dtype):
    """(atol, rtol) for comparisons with the float64 reference."""
    return (1e-4, 1e-5) if np.dtype(dtype) != np.float64 else (1e-10, 1e-10)
