"""Brillouin-zone geometry (mlepi.geometry.bz): the band path of the parity stage's DFT/HedgeNet band structure (the
stage itself runs in ``test_workflow``)."""

import numpy as np
import pytest
from ase.build import graphene

from mlepi.geometry.bz import hexagonal_path


@pytest.mark.parametrize("vacuum", [10.0, 20.0])
def test_band_path_follows_the_hexagonal_zone(vacuum):
    a = 2.46
    cell = graphene(a=a, vacuum=vacuum).cell
    kpts, dist, ticks = hexagonal_path(np.array(cell), ("G", "M", "K", "G"), n_points=60)
    # |GM| = 2π/(√3 a), |MK| = 2π/(3a), |KG| = 4π/(3a): the closed path G-M-K-G
    expected = np.cumsum([0.0, 2 * np.pi / (np.sqrt(3) * a), 2 * np.pi / (3 * a), 4 * np.pi / (3 * a)])
    assert np.allclose(ticks, expected, rtol=1e-9)
    assert np.allclose(kpts[0], 0.0) and np.allclose(kpts[-1], 0.0)
    assert np.all(np.diff(dist) > 0) and dist[-1] == pytest.approx(expected[-1])
    step = np.diff(dist)
    assert step.max() < 1.6 * step.min()  # evenly spaced in 1/Å across the three legs
