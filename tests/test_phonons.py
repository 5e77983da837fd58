"""displace -> phonons with forces from a known harmonic model: phonopy must give back its force constants.

Forces F = -Phi u of the spring network in test_thermal stand in for DFT, plus a constant residual force
on the pristine supercell and a grid egg-box spring on the displaced atom, both of which the phonon stage
must remove. The soft inter-layer springs are 20 times weaker than the egg-box spring, as in GPAW.
"""

import numpy as np
import pytest
from test_thermal import spring_force_constants

from mlepi import config
from mlepi.formats import provenance
from mlepi.formats.frames import Frame, write_frames
from mlepi.formats.structures import read_structure, write_structure
from mlepi.geometry.layers import build_bilayer
from mlepi.vibrations import displace, phonons
from mlepi.vibrations.thermal import HarmonicSampler, omega_to_THz

BASIS = {"name": "none", "orbitals": {"6": [["2s", 0]]}, "rcut": {"6": 1.0}, "valence": {"6": 4}}


def write_forces(path, atoms, forces):
    frame = Frame.from_atoms(path.stem, atoms, energy=0.0, forces=forces)
    write_frames(path, [frame], basis=BASIS, source="dft", parameters={}, provenance=provenance.record())


EGG_BOX_SPRING = 3.0  # eV/A^2: a spring tying the displaced atom to the grid, as measured with GPAW


@pytest.fixture(scope="module")
def phonon_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phonons")
    cfg = config.validate({"system": {"supercell": [3, 3]}}, ["system", "phonons"])
    unit = build_bilayer("AB")
    write_structure(tmp / "primitive.extxyz", unit)
    paths = displace.run(tmp / "primitive.extxyz", tmp / "displace", cfg)
    pristine = read_structure(paths[0])
    fc = spring_force_constants(pristine)
    residual = np.tile([0.0, 0.0, 0.01], (len(pristine), 1))  # a not-quite-relaxed structure
    write_forces(tmp / "pristine.h5", pristine, residual)
    fd_frames = []
    for path in paths[1:]:
        atoms = read_structure(path)
        u = atoms.positions - pristine.positions
        forces = residual - np.einsum("ijab,jb->ia", fc, u) - EGG_BOX_SPRING * u  # only the moved atom
        write_forces(tmp / f"{path.stem}.h5", atoms, forces)
        fd_frames.append(tmp / f"{path.stem}.h5")
    summary = phonons.run(tmp / "displace" / "phonopy_disp.yaml", tmp / "pristine.h5", fd_frames, tmp / "out", cfg)
    return tmp, pristine, fc, summary, len(paths) - 1


def test_ab_bilayer_needs_four_displacements(phonon_run):
    assert phonon_run[4] == 4  # DESIGN sec. 3: P-3m1 with is_plusminus='auto'


def test_force_constants_recovered(phonon_run):
    import phonopy

    tmp, pristine, fc, _, _ = phonon_run
    phonon = phonopy.load(tmp / "out" / "phonopy_params.yaml", log_level=0)
    sampler_dft = HarmonicSampler(fc, pristine.get_masses())
    from mlepi.vibrations.thermal import sampler_from_phonopy

    thermal_cfg = {"imaginary_tolerance_THz": 0.3, "soft_modes": "error", "force_constants": "finite_difference"}
    sampler_ph = sampler_from_phonopy(tmp / "out" / "phonopy_params.yaml", thermal_cfg)
    assert np.allclose(np.sort(omega_to_THz(sampler_ph.omega)), np.sort(omega_to_THz(sampler_dft.omega)),
                       atol=1e-6)
    assert phonon.force_constants.shape[-2:] == (3, 3)


def test_outputs_in_phonopy_formats(phonon_run):
    import yaml

    tmp, *_ = phonon_run
    for name in ("FORCE_SETS", "phonopy_params.yaml", "band.yaml", "phonon_bands.png", "summary.json"):
        assert (tmp / "out" / name).stat().st_size > 0
    band = yaml.safe_load((tmp / "out" / "band.yaml").read_text())
    assert band["nqpoint"] == 3 * 51
    summary = phonon_run[3]
    assert summary["egg_box_drift_eV_per_A2"] == pytest.approx(EGG_BOX_SPRING, rel=1e-6)
    assert summary["lowest_frequency_THz"] > -1e-3  # a stable harmonic model has no imaginary branch
    assert len(summary["gamma_frequencies_cm"]) == 12


def test_force_sets_must_match_displacements(phonon_run, tmp_path):
    tmp, *_ = phonon_run
    fd = sorted(tmp.glob("fd_*.h5"))
    with pytest.raises(phonons.PhononError, match="expects 4"):
        phonons.run(tmp / "displace" / "phonopy_disp.yaml", tmp / "pristine.h5", fd[:3], tmp_path)
    with pytest.raises(phonons.PhononError, match="positions differ"):
        phonons.run(tmp / "displace" / "phonopy_disp.yaml", tmp / "pristine.h5", fd[::-1], tmp_path)
