"""Stages ``supercell_bands`` and ``supercell_convergence``: the thermal band analysis in larger supercells.

The workflow's DFT supercell (``system.supercell``) fixes which phonons the Monte Carlo samples contain: the q
points commensurate with it. A larger n x n supercell contains more of them, and HedgeNet makes its Hamiltonians
cheap, so the band renormalization can be converged with supercell size without more DFT. For each n:

1. force constants of the n x n supercell from the DFT phonons: phonopy's dynamical matrices of the DFT
   supercell's force constants at the q points commensurate with n x n (exact at the q points the DFT supercell
   holds, Fourier-interpolated elsewhere), transformed back to real space (``DynmatToForceConstants``);
2. thermal samples at every temperature (:class:`mlepi.vibrations.thermal.HarmonicSampler`, the thermal config's seed,
   count, antithetic pairs and soft-mode policy; :func:`mlepi.vibrations.thermal.sample_rng` with purpose ``supercell``
   and n, so the stream depends on n as well);
3. HedgeNet H with GPAW's exact S (:func:`mlepi.ml.infer.predict_frames`): with a committee, the members' mean H,
   the same model as the answer's inference, so that sizes differ by their phonons alone (the members' own
   bands are not analysed here: the committee's spread is the workflow's supercell's);
4. the band analysis of :mod:`mlepi.electrons.bands` on the n x n pristine supercell, band window centred on the DFT
   Fermi level of the workflow's pristine supercell.

``supercell_convergence`` puts v_F(T) and the band energies at K of every size (the workflow's own analysis
included) in one table and figure, with each size's mean-square displacements and their flexural (ZA) part
(:mod:`mlepi.vibrations.msd`), and says from which size v_F is within error of the largest size's. Only sizes
divisible by 3 hold the phonons at K, which couple the two Dirac cones: 4 x 4 and 8 x 8 miss them, so v_F need
not approach its limit monotonically in n.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from phonopy import Phonopy
from phonopy.harmonic.dynmat_to_fc import DynmatToForceConstants
from tqdm import tqdm

from mlepi import figures
from mlepi.config import stage_config
from mlepi.electrons import bands, committee
from mlepi.formats import provenance
from mlepi.formats.frames import write_frames
from mlepi.formats.structures import read_structure, write_structure
from mlepi.ml.infer import predict_frames
from mlepi.ml.memory import keep_freed_memory
from mlepi.ml.model import HedgeNet
from mlepi.vibrations.displace import supercell_layers, to_ase
from mlepi.vibrations.msd import branch_msd
from mlepi.vibrations.phonons import read_phonopy
from mlepi.vibrations.thermal import HarmonicSampler, sample_rng, sample_structures


def interpolated_force_constants(phonon, n: int):
    """(n x n supercell as a Phonopy object, its force constants [N, N, 3, 3] in eV/Å²) from ``phonon``'s."""
    target = Phonopy(phonon.unitcell, supercell_matrix=np.diag([n, n, 1]), primitive_matrix=phonon.primitive_matrix)
    d2f = DynmatToForceConstants(target.primitive, target.supercell)
    phonon.run_qpoints(d2f.commensurate_points, with_dynamical_matrices=True)
    d2f.dynamical_matrices = phonon.qpoints.dynamical_matrices
    d2f.run()
    return target, np.array(d2f.force_constants)


def run(model_paths, phonopy_params, primitive_path, reference_path, n: int, out_dir, config: dict | None = None, *,
        workers: int = 1) -> dict:
    """Thermal samples of the n x n supercell, HedgeNet frames, and the band analysis in ``out_dir``.

    ``model_paths``: one ``model.pt``, or a committee's (their mean H).

    ``config``: config sections (:func:`mlepi.config.stage_config`); the stage reads the thermal sampler's keys
    and ``thermal.temperatures`` (the temperatures it samples), and the ``bands`` section. ``reference_path``:
    DFT frames file of the workflow's pristine supercell (its Fermi level centres the band window). Writes
    ``pristine.extxyz``, ``T<T>.h5`` (HedgeNet frames) and the outputs of :func:`mlepi.electrons.bands.run`;
    returns its ``bands.json``.
    """
    config = stage_config("supercell_bands", config)
    out_dir = Path(out_dir)
    thermal_cfg = config["thermal"]
    keep_freed_memory()  # one prediction per batch: reuse the memory of the last (mlepi.ml.memory)
    paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    members = [HedgeNet.load(path) for path in paths]
    phonon = read_phonopy(phonopy_params)
    primitive = read_structure(primitive_path)
    target, fc = interpolated_force_constants(phonon, n)
    pristine = to_ase(target.supercell, supercell_layers(target, primitive))
    sampler = HarmonicSampler(fc, target.supercell.masses, thermal_cfg["imaginary_tolerance_THz"],
                              thermal_cfg["soft_modes"])
    write_structure(out_dir / "pristine.extxyz", pristine, kind="pristine")
    frames_paths = []
    for T in thermal_cfg["temperatures"]:
        u = sampler.sample(T, thermal_cfg["infer_samples"], sample_rng(thermal_cfg["seed"], "supercell", T, n),
                           thermal_cfg["antithetic"])
        samples, infos = sample_structures(pristine, u, sampler, T, thermal_cfg, "supercell")
        for atoms, info in zip(samples, infos):
            atoms.info.update(info, supercell=[n, n])
        names = [f"sc{n}_T{T:g}_s{k:03d}" for k in range(len(samples))]
        with tqdm(total=len(samples), desc=f"{n}x{n} at {T:g} K", unit="sample") as bar:
            frames = predict_frames(members if len(members) > 1 else members[0], samples, names,
                                    fermi_level=False, workers=workers, progress=lambda _: bar.update())
        for frame in frames:  # the mean alone: the band analysis would analyse every member's H as well
            committee.drop_members(frame)
        frames_paths.append(out_dir / f"T{T:g}.h5")
        write_frames(frames_paths[-1], frames, basis=members[0].basis, source="hedgenet",
                     parameters={"model_path": str(paths[0]), "committee": list(map(str, paths)),
                                 "supercell": [n, n]},
                     provenance=provenance.record(config, seed=thermal_cfg["seed"]))
    return bands.run(frames_paths, primitive, pristine, out_dir, config, reference=reference_path,
                     workers=workers)


MSD_COLUMNS = ["u2_xy_A2", "u2_z_A2", "u2_z_ZA_A2", "ZA_share"]
COLUMNS = ["supercell", "n_atoms", "holds_K", "T_K", "n_samples", "vf_1e6_m_s", "vf_err_1e6_m_s",
           "vf_minus_largest_1e6_m_s", "within_error_of_largest"] + MSD_COLUMNS + [
    f"band{b}_K{suffix}_eV" for b in range(1, bands.N_BANDS + 1) for suffix in ("", "_err")]


def summarize(summaries: dict, out_dir, phonopy_params=None, tolerance_THz: float = 0.3) -> list[dict]:
    """``convergence.csv`` and ``convergence.png`` from ``{n: bands.json path}`` (the workflow's size included).

    Per size and temperature: v_F and the band energies at K, v_F's difference from the largest size's and
    whether it is within their combined sampling error, whether the size holds the phonons at K (n divisible
    by 3: the intervalley modes that couple the two Dirac cones), and with ``phonopy_params`` the
    mean-square displacements of the size's samples by branch (:func:`mlepi.vibrations.msd.branch_msd`,
    ``tolerance_THz`` as the sampler's).
    """
    out_dir = Path(out_dir)
    phonon = read_phonopy(phonopy_params) if phonopy_params else None
    documents = {int(n): json.loads(Path(path).read_text()) for n, path in summaries.items()}
    largest = {r["T_K"]: r for r in documents[max(documents)]["temperatures"]}
    rows = []
    for n, document in sorted(documents.items()):
        n_cells = abs(round(np.linalg.det(np.array(document["geometry"]["supercell_matrix"]))))
        temperatures = [r["T_K"] for r in document["temperatures"]]
        msd = {m["T_K"]: m for m in branch_msd(phonon, n, temperatures, tolerance_THz)} if phonon else {}
        for r in document["temperatures"]:
            ref = largest.get(r["T_K"])
            difference = r["vf_1e6_m_s"] - ref["vf_1e6_m_s"] if ref else float("nan")
            row = {"supercell": n, "n_atoms": 4 * n_cells, "holds_K": n % 3 == 0, "T_K": r["T_K"],
                   "n_samples": r["n_samples"], "vf_1e6_m_s": r["vf_1e6_m_s"], "vf_err_1e6_m_s": r["vf_err_1e6_m_s"],
                   "vf_minus_largest_1e6_m_s": difference,
                   "within_error_of_largest": bool(ref) and abs(difference) <= float(
                       np.hypot(r["vf_err_1e6_m_s"], ref["vf_err_1e6_m_s"]))}
            row.update({key: msd.get(r["T_K"], {}).get(key, float("nan")) for key in MSD_COLUMNS})
            for b in range(bands.N_BANDS):
                row[f"band{b + 1}_K_eV"] = r["bands_K_eV"][b]
                row[f"band{b + 1}_K_err_eV"] = r["bands_K_err_eV"][b]
            rows.append(row)
    provenance.write_csv(out_dir / "convergence.csv", rows, COLUMNS)
    figures.plot_supercell_convergence(rows, out_dir / "convergence.png")
    return rows


def converged_size(rows: list[dict], T_K: float) -> int | None:
    """The smallest size whose v_F at ``T_K``, and every larger size's, is within error of the largest's; None
    when only the largest is (the answer is not shown converged)."""
    sel = sorted((r for r in rows if r["T_K"] == T_K), key=lambda r: r["supercell"])
    size = None
    for r in reversed(sel[:-1]):
        if not r["within_error_of_largest"]:
            break
        size = r["supercell"]
    return size
