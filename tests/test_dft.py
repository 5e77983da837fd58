"""Stages ``structure`` and ``dft``: bilayer geometry, layers, GPAW SCF, forces and the H(R), S(R) blocks.

The GPAW tests (``slow``) run tiny real calculations (4- and 8-atom cells, ``sz(dzp)`` basis, small k
meshes); the reference is always GPAW itself, a symmetry, or a physical range, never a frozen number.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mlepi import cli, config
from mlepi.dft import calculator, matrices, scf, structure
from mlepi.dft.tiling import TilingError
from mlepi.electrons import tb
from mlepi.errors import MlepiError
from mlepi.formats.frames import FramesFile
from mlepi.formats.structures import read_structure, write_structure
from mlepi.geometry import layers, neighbors

A = 2.46


@contextlib.contextmanager
def capture_stderr():
    with contextlib.redirect_stderr(io.StringIO()) as buffer:
        yield buffer


def dft_cfg(**overrides) -> dict:
    """A complete ``dft`` section, cheap: sz(dzp), 4x4 k, SCF tight enough for finite differences."""
    cfg = config.section_config("dft")
    cfg.update(basis="sz(dzp)", kpts_primitive=[4, 4], scf_energy=1e-7, scf_maxiter=200, symmetry="off",
               relax_steps=40)
    cfg.update(overrides)
    return cfg


def system_cfg(**overrides) -> dict:
    cfg = config.section_config("system")
    cfg.update(overrides)
    return cfg


# ------------------------------------------------------------------------------- structure, no DFT
def test_build_bilayer_ab_geometry():
    atoms = layers.build_bilayer("AB", a=A, interlayer_distance=3.35, vacuum=15.0)
    assert len(atoms) == 4 and list(atoms.arrays["layer"]) == [0, 0, 1, 1]
    assert np.allclose(atoms.cell.cellpar(), [A, A, 18.35, 90, 90, 120])
    assert layers.interlayer_distance(atoms) == pytest.approx(3.35)
    z = atoms.positions[:, 2]
    assert (z.min() + z.max()) / 2 == pytest.approx(atoms.cell[2, 2] / 2)  # layers centred in z
    # Bond length a/sqrt(3) within each layer (minimum image in plane).
    for layer in (0, 1):
        i, j = np.flatnonzero(atoms.arrays["layer"] == layer)
        assert atoms.get_distance(i, j, mic=True) == pytest.approx(A / np.sqrt(3))
    # Bernal registry: top A2 sits exactly over bottom B1; top B2 over a hexagon centre, i.e. at in-plane
    # distance a/sqrt(3) from the six atoms of that hexagon and never on top of an atom.
    xy = atoms.positions[:, :2]
    assert np.allclose(xy[2], xy[1])
    lattice = np.array([n1 * atoms.cell[0, :2] + n2 * atoms.cell[1, :2]
                        for n1 in range(-2, 3) for n2 in range(-2, 3)])
    d_b2 = np.linalg.norm(xy[3] - (xy[:2, None, :] + lattice[None]), axis=-1).ravel()
    assert d_b2.min() == pytest.approx(A / np.sqrt(3))
    assert np.sum(np.isclose(d_b2, A / np.sqrt(3))) == 6


@pytest.mark.parametrize("stacking, space_group", [("AB", 164), ("AA", 191)])
def test_build_bilayer_space_group(stacking, space_group):
    """AB (Bernal) is P-3m1 (164), AA is P6/mmm (191): what phonopy will find."""
    import spglib

    atoms = layers.build_bilayer(stacking)
    cell = (np.array(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    assert spglib.get_symmetry_dataset(cell, symprec=1e-5).number == space_group


def test_build_bilayer_rejects_unknown_stacking():
    with pytest.raises(ValueError, match="stacking"):
        layers.build_bilayer("ABC")


def test_assign_layers_shuffled_rattled_supercell():
    atoms = layers.build_bilayer().repeat((3, 3, 1))
    expected = atoms.arrays["layer"].copy()
    atoms.rattle(0.1, seed=3)
    order = np.random.default_rng(0).permutation(len(atoms))
    assert np.array_equal(layers.assign_layers(atoms[order]), expected[order])
    assert np.array_equal(layers.assign_layers(atoms.positions[order]), expected[order])


def test_assign_layers_slab_across_the_cell_boundary():
    """A slab shifted so that its bottom layer wraps to the top of the cell is still numbered from the bottom."""
    atoms = layers.build_bilayer()
    expected = atoms.arrays["layer"].copy()
    shifted = atoms.copy()
    shifted.positions[:, 2] += atoms.cell[2, 2] / 2 - 3.35 / 2 + 0.5  # bottom layer now just below c
    shifted.wrap()
    assert shifted.positions[0, 2] > shifted.positions[2, 2]  # the top layer now has the smaller z
    assert np.array_equal(layers.assign_layers(shifted), expected)


def test_assign_layers_three_layers_and_gap():
    z = np.array([0.0, 0.1, 3.4, 3.5, 6.8, 6.9])
    positions = np.column_stack([np.zeros(6), np.zeros(6), z])
    assert list(layers.assign_layers(positions)) == [0, 0, 1, 1, 2, 2]
    assert list(layers.assign_layers(positions, gap=4.0)) == [0] * 6


def test_supercell_scaling_of_k_mesh_and_grid():
    atoms = layers.build_bilayer().repeat((3, 2, 1))
    supercell = scf.infer_supercell(atoms, A)
    assert supercell == (3, 2) and all(isinstance(n, int) for n in supercell)
    assert calculator.scaled_kpts([12, 12], supercell) == (4, 6, 1)
    cfg = dft_cfg(grid_points_primitive=12, grid_spacing_z=0.2)
    gpts = calculator.grid_points(atoms, cfg, supercell)
    assert gpts[:2] == (36, 24)
    assert gpts[2] % 4 == 0 and atoms.cell[2, 2] / gpts[2] <= 0.2
    # The grid spacing is the primitive one in every cell (same egg-box, same energy per atom).
    assert np.allclose(atoms.cell.lengths()[:2] / gpts[:2], A / 12)
    assert scf.infer_supercell(atoms, None) == (1, 1)
    twisted = layers.build_bilayer()
    twisted.set_cell(twisted.cell * [[np.sqrt(7)], [np.sqrt(7)], [1]], scale_atoms=False)
    assert scf.infer_supercell(twisted, A)[0] == pytest.approx(np.sqrt(7))


def edges(atoms, rc):
    """Block edges (i, j, R) of ``atoms`` for per-atom radii ``rc`` (pairs within rc_i + rc_j, on-site included)."""
    (i, j), R = neighbors.neighbor_edges(atoms.positions, atoms.cell[:], atoms.pbc, rc, self_edges=True)
    return i, j, R


def test_block_kmesh_detects_aliasing():
    """The extraction mesh must separate every lattice vector in the support of H (rc_i + rc_j)."""
    atoms = layers.build_bilayer()
    rc = np.full(len(atoms), 3.53)  # about C sz(dzp)
    i, j, R = edges(atoms, rc)
    mesh = matrices.block_kmesh(atoms, i, j, R)
    assert mesh[2] == 1 and len(matrices.aliasing_conflicts(i, j, R, mesh)) == 0
    # The support has diameter 2 * 7.06 A: 6 x 2.46 A is the first mesh that holds it.
    assert mesh[:2] == (6, 6)
    with pytest.raises(matrices.BlockAliasingError, match="aliases"):
        matrices.block_kmesh(atoms, i, j, R, requested=(3, 3))
    thin = layers.build_bilayer(vacuum=3.0)
    with pytest.raises(matrices.BlockAliasingError, match="vacuum"):
        matrices.block_kmesh(thin, *edges(thin, rc))
    # A 3x3 supercell needs only 2x2 k points.
    big = atoms.repeat((3, 3, 1))
    assert matrices.block_kmesh(big, *edges(big, np.full(len(big), 3.53)))[:2] == (2, 2)


def test_orbital_labels_from_gpaw_basis():
    from gpaw.basis_data import Basis

    labels = [matrices.orbital_label(bf.type) for bf in Basis.find("C", "dzp").bf_j]
    assert labels[:2] == ["2s", "2p"] and len(labels) == 5


# ------------------------------------------------------------------------------- GPAW
@pytest.fixture(scope="module")
def rattled(tmp_path_factory):
    """Rattled AB primitive cell (no symmetry left) with atom 0 one lattice vector outside the cell."""
    atoms = layers.build_bilayer()
    atoms.rattle(0.05, seed=11)
    atoms.positions[0] += atoms.cell[0] - atoms.cell[1]  # the frame keeps unwrapped positions
    cfg = dft_cfg()
    log = tmp_path_factory.mktemp("rattled") / "gpaw.txt"
    frame, basis, calc, _ = scf.compute_frame(atoms, cfg, name="rattled", txt=str(log))
    return atoms, frame, basis, calc, cfg


# Off both the 4x4 SCF mesh and the 6x6 block mesh, plus K (on the block mesh, off the SCF mesh).
K_OFF_MESH = np.array([[0.1234, 0.0567, 0.0], [0.37, -0.29, 0.0], [-0.41, 0.23, 0.0], [1 / 3, 1 / 3, 0.0]])


@pytest.mark.slow
def test_overlap_without_scf_equals_the_scf_overlap(rattled):
    """matrices.overlap_blocks (no SCF, what inference uses) gives the S blocks of the full DFT run."""
    atoms, frame, basis, _, cfg = rattled
    edge_index, cell_shift, S, basis_s = matrices.overlap_blocks(atoms, cfg)
    assert basis_s == basis
    assert np.array_equal(edge_index, frame.edge_index) and np.array_equal(cell_shift, frame.cell_shift)
    assert np.abs(S - frame.S).max() < 1e-10


@pytest.mark.slow
def test_eigenvalues_match_gpaw_off_mesh(rattled):
    """Bands of H(k) c = e S(k) c from the stored blocks equal GPAW's non-self-consistent bands."""
    _, frame, basis, calc, _ = rattled
    fixed = calculator.gpaw_calculator(calc).fixed_density(kpts=K_OFF_MESH, symmetry="off", txt=None)
    reference = np.array([fixed.get_eigenvalues(kpt=k) for k in range(len(K_OFF_MESH))])
    ours = tb.eigenvalues(frame, basis, K_OFF_MESH)[:, :reference.shape[1]]
    error = np.abs(ours - reference).max()
    print(f"max eigenvalue error off the SCF mesh: {error:.2e} eV "
          f"(H tail beyond rc_i + rc_j: {frame.info['block_tail_max_abs_H']:.1e} eV)")
    assert error < 1e-3


@pytest.mark.slow
def test_bloch_phase_convention_matches_gpaw_matrices(rattled):
    """H(k), S(k) themselves (not only their spectra, which cannot tell k from -k) equal GPAW's.

    GPAW uses wrapped positions, the frame the unwrapped ones: the two differ by the gauge
    D = diag(exp(2 pi i k.n_a)) with n_a the lattice vector atom a was moved by.
    """
    atoms, frame, basis, calc, _ = rattled
    H_ref, S_ref, k_kc = matrices.kspace_matrices(calculator.gpaw_calculator(calc), K_OFF_MESH)
    assert np.allclose(k_kc, K_OFF_MESH)
    n_a = matrices.gpaw_cell_offsets(atoms, calculator.gpaw_calculator(calc).dft.relpos_ac)
    assert n_a[0].any()  # the gauge is exercised
    counts = np.diff(tb.orbital_offsets(frame.numbers, basis))
    n_M = np.repeat(n_a, counts, axis=0)  # [n_orb, 3]
    D = np.exp(2j * np.pi * K_OFF_MESH @ n_M.T)  # [n_k, n_orb]
    H_ref = D[:, :, None] * H_ref * D[:, None, :].conj()
    S_ref = D[:, :, None] * S_ref * D[:, None, :].conj()
    H_k, S_k = tb.bloch_sum(frame, basis, K_OFF_MESH)
    assert np.abs(H_k - H_ref).max() < 1e-4  # eV; the neglected tail is ~1e-7 eV per element
    assert np.abs(S_k - S_ref).max() < 1e-6
    # The opposite phase convention is far off: the test can tell the sign.
    H_minus, _ = tb.bloch_sum(frame, basis, -K_OFF_MESH)
    assert np.abs(H_minus - H_ref).max() > 1e-2


@pytest.mark.slow
def test_blocks_from_the_scf_k_points_equal_a_non_self_consistent_run(rattled):
    """When the SCF's own k mesh does not alias, the blocks come from its k points (those time reversal took
    out by conjugation) instead of a fixed_density run on another mesh: the same blocks."""
    atoms = rattled[0].copy()
    gpaw = calculator.gpaw_calculator(
        calculator.converge(atoms, dft_cfg(kpts_primitive=[7, 7], symmetry="time_reversal")))
    assert matrices.scf_mesh(gpaw) == (7, 7, 1) and gpaw.dft.ibzwfs.ibz.time_reversal_K.any()
    own_mesh, other_mesh = {}, {}
    edge_index, cell_shift, H, S, _ = matrices.extract_blocks(gpaw, atoms, diagnostics=own_mesh)
    reference = matrices.extract_blocks(gpaw, atoms, kpts_blocks=(6, 6), diagnostics=other_mesh)
    assert own_mesh["block_kmesh"] == [7, 7, 1] and other_mesh["block_kmesh"] == [6, 6, 1]
    assert np.array_equal(edge_index, reference[0]) and np.array_equal(cell_shift, reference[1])
    assert np.abs(H - reference[2]).max() < 1e-6  # eV; the meshes alias the ~1e-7 eV tail differently
    assert np.abs(S - reference[3]).max() < 1e-8


@pytest.mark.slow
def test_blocks_hermitian_and_complete(rattled):
    """H_ij(R) = H_ji(-R)^T and S likewise, every edge has its partner, on-site blocks are symmetric."""
    _, frame, basis, _, _ = rattled
    i, j = frame.edge_index
    index = {(a, b, tuple(R)): e for e, (a, b, R) in enumerate(zip(i, j, frame.cell_shift.tolist()))}
    counts = np.diff(tb.orbital_offsets(frame.numbers, basis))
    for (a, b, R), e in index.items():
        partner = index[(b, a, tuple(-np.array(R)))]
        na, nb = counts[a], counts[b]
        assert np.abs(frame.H[e, :na, :nb] - frame.H[partner, :nb, :na].T).max() < 1e-10
        assert np.abs(frame.S[e, :na, :nb] - frame.S[partner, :nb, :na].T).max() < 1e-12
    # Every pair within rc_i + rc_j is there, and nothing beyond.
    rc = basis["rcut"]["6"]
    d = np.linalg.norm(frame.positions[j] + frame.cell_shift @ frame.cell - frame.positions[i], axis=1)
    assert d.max() < 2 * rc
    assert len(i) == len(edges(frame.to_atoms(), np.full(frame.n_atoms, rc))[0])


@pytest.mark.slow
def test_onsite_overlap_is_a_species_property(rattled):
    """On-site S blocks agree between the atoms of one species, up to the PAW term of the neighbours.

    GPAW's S = <phi|phi> + sum_a <phi|p_a> dO_a <p_a|phi> includes the projectors p_a of the neighbouring
    atoms (within rc + r_proj), so it is not exactly atomic; that environment term is below 1 %.
    """
    frame = rattled[1]
    i, j = frame.edge_index
    onsite = np.flatnonzero((i == j) & ~frame.cell_shift.any(axis=1))
    assert sorted(i[onsite]) == list(range(frame.n_atoms))
    blocks = frame.S[onsite]
    assert np.abs(blocks - blocks[0]).max() < 1e-2
    assert np.allclose(np.diagonal(blocks, axis1=1, axis2=2), 1.0, atol=1e-2)
    assert all(np.linalg.eigvalsh(b).min() > 0.9 for b in blocks)


@pytest.mark.slow
def test_energy_and_forces_include_d3(rattled):
    """Stored energy = GPAW free energy + D3, forces likewise; E_F is GPAW's."""
    from dftd3.ase import DFTD3

    atoms, frame, _, calc, cfg = rattled
    gpaw = calculator.gpaw_calculator(calc)
    d3 = DFTD3(method=cfg["xc"], damping="d3bj")
    probe = atoms.copy()
    probe.calc = d3
    assert frame.energy == pytest.approx(gpaw.get_potential_energy(atoms, force_consistent=True)
                                         + probe.get_potential_energy(), abs=1e-8)
    assert np.allclose(frame.forces, gpaw.get_forces(atoms) + probe.get_forces(), atol=1e-8)
    assert np.abs(probe.get_forces()).max() > 1e-4  # D3 does contribute
    assert frame.fermi_level == pytest.approx(gpaw.get_fermi_level())


@pytest.mark.slow
def test_forces_sum_and_finite_difference(rattled):
    """Forces are -dE/dx of the stored (free) energy, and nearly sum to zero.

    The sum is not exactly zero in LCAO on a real-space grid (egg-box effect of the grid, ~0.5 % here).
    """
    atoms, frame, _, _, cfg = rattled
    forces = frame.forces
    assert np.linalg.norm(forces.sum(axis=0)) < 0.02 * np.abs(forces).max()
    a, c = np.unravel_index(np.argmax(np.abs(forces)), forces.shape)
    delta = 0.01
    moved = atoms.copy()
    moved.positions[a, c] += delta
    calc = calculator.converge(moved, cfg, txt=None)
    e_plus = calculator.free_energy(calc, moved)
    moved.positions[a, c] -= 2 * delta  # same calculator: GPAW restarts from the previous density
    e_minus = calculator.free_energy(calc, moved)
    fd = -(e_plus - e_minus) / (2 * delta)
    assert fd == pytest.approx(forces[a, c], rel=1e-2)


@pytest.mark.slow
def test_run_primitive_and_supercell_agree(tmp_path):
    """``run`` writes a complete frames file; a 3x1 supercell (k mesh and grid scaled) gives the same
    energy per atom and Fermi level as the primitive cell, and carries the input's info. The supercell's
    frame tiled from the primitive calculation (``tile_to``) is the direct supercell calculation's."""
    # 3x3 contains K: without it the sampled bands have a gap and E_F is anywhere inside it.
    cfg = {"system": system_cfg(), "dft": dft_cfg(kpts_primitive=[3, 3], scf_energy=1e-6)}
    primitive = layers.build_bilayer()
    del primitive.arrays["layer"]  # run assigns layers itself
    results = {}
    for label, atoms in (("prim", primitive), ("sc31", primitive.repeat((3, 1, 1)))):
        path = tmp_path / f"{label}.extxyz"
        write_structure(path, atoms, kind="thermal", temperature_K=300.0, seed=7, sample_index=1)
        out = scf.run(path, tmp_path / f"{label}.h5", cfg, log_path=tmp_path / f"{label}.gpaw.txt")
        results[label] = FramesFile(out)
    prim, sc = results["prim"][0], results["sc31"][0]
    assert sc.info["supercell"] == [3, 1] and prim.info["supercell"] == [1, 1]
    assert sc.info["temperature_K"] == 300.0 and sc.info["seed"] == 7 and sc.info["kind"] == "thermal"
    assert "provenance" not in sc.info and "schema" not in sc.info
    assert list(prim.layer) == [0, 0, 1, 1]
    # Same grid spacing, folded k mesh, no symmetry reduction: the same numbers up to SCF convergence.
    assert sc.energy / sc.n_atoms == pytest.approx(prim.energy / prim.n_atoms, abs=1e-5)
    assert sc.fermi_level == pytest.approx(prim.fermi_level, abs=1e-4)
    # The on-site Hamiltonian of atom 0 is the same block in both cells.
    onsite = [f.H[np.flatnonzero((f.edge_index[0] == 0) & (f.edge_index[1] == 0) & ~f.cell_shift.any(1))[0]]
              for f in (prim, sc)]
    assert np.abs(onsite[0] - onsite[1]).max() < 1e-4
    frames_file = results["prim"]
    # the DFT settings the stage read: the dft section but the relaxation's keys
    assert frames_file.source == "dft" and frames_file.parameters == config.stage_config("dft", cfg)["dft"]
    assert "relax_fmax" not in frames_file.parameters
    assert frames_file.basis["orbitals"] == {"6": [["2s", 0], ["2p", 1]]}
    assert frames_file.basis["valence"] == {"6": 4} and frames_file.basis["name"] == "sz(dzp)"
    assert frames_file.provenance["config_hash"]
    log = (tmp_path / "prim.gpaw.txt").read_text()
    assert "mlepi dft" in log
    # The SCF steps GPAW logged (its "iter:" lines, less the one non-self-consistent step of the blocks).
    assert prim.info["scf_iterations"] == log.count("|iter:") - 1 > 2

    out = scf.run(tmp_path / "prim.extxyz", tmp_path / "tiled.h5", cfg, name="pristine",
                  tile_to=tmp_path / "sc31.extxyz")
    tiled = FramesFile(out)[0]
    assert tiled.name == "pristine" and tiled.info["supercell"] == [3, 1] and tiled.info["kind"] == "thermal"
    assert tiled.info["structure_file"] == str(tmp_path / "sc31.extxyz")
    assert tiled.info["tiled_from"] == str(tmp_path / "prim.extxyz") and tiled.info["scf_iterations"] > 2
    np.testing.assert_array_equal(tiled.positions, sc.positions)
    np.testing.assert_array_equal(tiled.edge_index, sc.edge_index)
    np.testing.assert_array_equal(tiled.cell_shift, sc.cell_shift)
    # One numerical path (folded k mesh, same grid spacing), but two SCFs, each stopped where it met scf_energy:
    # measured 2e-12 eV, 6e-8 eV/Å, S 7e-16, H 1.3e-8 eV on one host; 6e-11 eV, 5.1e-6 eV/Å, S 5e-16, H 4.2e-7 eV
    # on another (2.5× slower, another CPU), where the two SCFs ended after 10 and 11 iterations. S has no SCF.
    assert tiled.energy == pytest.approx(sc.energy, abs=1e-8)
    assert tiled.fermi_level == pytest.approx(sc.fermi_level, abs=2e-6)
    np.testing.assert_allclose(tiled.forces, sc.forces, atol=2e-5)
    np.testing.assert_allclose(tiled.S, sc.S, atol=1e-12)
    np.testing.assert_allclose(tiled.H, sc.H, atol=2e-6)
    with pytest.raises(TilingError, match="needs the primitive cell"):  # before any SCF
        scf.run(tmp_path / "sc31.extxyz", tmp_path / "bad.h5", cfg, tile_to=tmp_path / "prim.extxyz")
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.slow
def test_scf_failure_is_retried_then_raises_and_writes_nothing(tmp_path, caplog):
    path = tmp_path / "in.extxyz"
    write_structure(path, layers.build_bilayer(), kind="pristine")
    out = tmp_path / "out.h5"
    # the fewest iterations the schema allows, its tightest criteria and an unstable mixer (the full output density,
    # no history: the charge sloshes): neither the SCF converges nor its retry (twice the iterations)
    slosh = {"name": "pulay", "beta": 1.0, "nmaxold": 1, "weight": 1.0}
    config = {"system": system_cfg(), "dft": dft_cfg(scf_maxiter=10, scf_energy=1e-9, scf_density=1e-9, mixer=slosh,
                                                 retry_mixer=slosh)}
    with pytest.raises(calculator.SCFConvergenceError, match="in .*retry") as err:
        scf.run(path, out, config, log_path=tmp_path / "gpaw.txt")
    assert "basis=sz(dzp)" in str(err.value) and "maxiter 20" in str(err.value)
    assert isinstance(err.value, MlepiError)  # the CLI prints it as one line and exits with status 2
    assert "retrying with mixer" in caplog.text and "pulay" in (tmp_path / "gpaw.txt").read_text().lower()
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary file left behind


@pytest.mark.parametrize("installed, missing", [([], "PAW setup (PBE) for C: C.PBE"),
                                                 (["C.PBE.gz"], "basis set (dft.basis = dz(dzp)) for C: C.dzp.basis")])
def test_missing_setups_are_one_clear_error_before_any_scf(tmp_path, installed, missing):
    import gpaw

    for name in installed:
        (tmp_path / name).symlink_to(Path(gpaw.setup_paths[0]) / name)
    path = tmp_path / "in.extxyz"
    write_structure(path, layers.build_bilayer(), kind="pristine")
    saved = list(gpaw.setup_paths)
    gpaw.setup_paths[:] = [str(tmp_path)]  # in place: gpaw.setup_data holds the same list
    try:
        with capture_stderr() as stderr:
            status = cli.main(["dft", str(path), "--params", json.dumps({"system": system_cfg(), "dft": dft_cfg(
                basis="dz(dzp)")}), "--out", str(tmp_path / "out.h5")])
    finally:
        gpaw.setup_paths[:] = saved
    lines = stderr.getvalue().splitlines()
    assert status == 2 and len(lines) == 1 and missing in lines[0] and "GPAW_SETUP_PATH" in lines[0], lines
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.slow
def test_structure_run_relaxes_to_a_physical_interlayer_distance(tmp_path):
    """PBE + D3(BJ) puts the AB bilayer at 3.2-3.6 A (expt. 3.35); the registry and cell stay fixed.

    dz(dzp) is the smallest basis that binds the bilayer for the right reason: with sz(dzp) (and
    szp(dzp)) plain PBE already binds it by ~0.2 eV through basis-set superposition error and the
    relaxation collapses it to ~2.7 A.
    """
    config = {"system": system_cfg(), "dft": dft_cfg(basis="dz(dzp)", kpts_primitive=[6, 6],
                                                      scf_energy=1e-6, relax_fmax=0.01)}
    out = structure.run(tmp_path / "primitive.extxyz", config, log_path=tmp_path / "gpaw.txt")
    relaxed = read_structure(out)
    start = layers.build_bilayer()
    assert 3.2 < relaxed.info["interlayer_distance"] < 3.6
    assert relaxed.info["interlayer_distance"] == pytest.approx(layers.interlayer_distance(relaxed))
    assert relaxed.info["max_force"] < config["dft"]["relax_fmax"]
    assert relaxed.info["kind"] == "relaxed" and relaxed.info["schema"] == "mlepi.structure"
    assert json.loads(relaxed.info["provenance"])["config_hash"]
    assert list(relaxed.arrays["layer"]) == [0, 0, 1, 1]
    assert np.allclose(relaxed.cell, start.cell)
    assert np.allclose(relaxed.get_scaled_positions()[:, :2], start.get_scaled_positions()[:, :2], atol=1e-6)
    assert "BFGS" in (tmp_path / "gpaw.txt").read_text()
