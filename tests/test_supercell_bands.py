"""Force constants of larger supercells interpolated from a smaller one's (mlepi.ml.supercell_bands): exact on the
same supercell, translation invariant, and a 6x6 spectrum that holds every 3x3 frequency (its q points are a
subset); and the random stream of the larger-supercell samples."""

import numpy as np
import pytest
from phonopy import Phonopy
from test_thermal import spring_force_constants

from mlepi.geometry.layers import build_bilayer
from mlepi.vibrations.phonons import interpolated_force_constants
from mlepi.vibrations.displace import supercell_layers, to_ase, to_phonopy
from mlepi.vibrations.thermal import HarmonicSampler, sample_rng


@pytest.fixture(scope="module")
def phonon():
    unitcell = build_bilayer("AB")
    ph = Phonopy(to_phonopy(unitcell), supercell_matrix=np.diag([3, 3, 1]), primitive_matrix="P")
    ph.force_constants = spring_force_constants(to_ase(ph.supercell, supercell_layers(ph, unitcell)))
    return ph


def test_same_supercell_gives_back_the_force_constants(phonon):
    _, fc = interpolated_force_constants(phonon, 3)
    np.testing.assert_allclose(fc, phonon.force_constants, atol=1e-10 * np.abs(phonon.force_constants).max())


def test_larger_supercell_contains_the_smaller_ones_frequencies(phonon):
    target, fc = interpolated_force_constants(phonon, 6)
    assert fc.shape == (144, 144, 3, 3)
    np.testing.assert_allclose(fc.sum(axis=1), 0.0, atol=1e-9)  # acoustic sum rule survives the transform
    np.testing.assert_allclose(fc, fc.transpose(1, 0, 3, 2), atol=1e-9)
    small = HarmonicSampler(phonon.force_constants, phonon.supercell.masses).frequencies_THz
    large = HarmonicSampler(fc, target.supercell.masses).frequencies_THz
    nearest = np.abs(small[:, None] - large[None, :]).min(axis=1)
    assert nearest.max() < 1e-6 * small.max()
    assert len(large) == 4 * len(small) + 9  # 3n - 3 modes each (translations left out)


def test_sample_streams_depend_on_size_and_temperature():
    draw = [sample_rng(7, "supercell", T, n).standard_normal(3) for T, n in ((300.0, 4), (300.0, 4), (300.0, 6),
                                                                             (0.0, 4))]
    np.testing.assert_array_equal(draw[0], draw[1])
    assert not np.allclose(draw[0], draw[2]) and not np.allclose(draw[0], draw[3])
