"""Stages ``supercell_bands`` and ``supercell_convergence``: the thermal band analysis in larger supercells.

The workflow's DFT supercell (``system.supercell``) fixes which phonons the Monte Carlo samples contain: the q
points commensurate with it. A larger n x n supercell contains more of them, and HedgeNet makes its Hamiltonians
cheap, so the band renormalization can be converged with supercell size without more DFT. For each n:

1. force constants of the n x n supercell from the DFT phonons: phonopy's dynamical matrices of the DFT
   supercell's force constants at the q points commensurate with n x n (exact at the q points the DFT supercell
   holds, Fourier-interpolated elsewhere), transformed back to real space
   (:func:`mlepi.vibrations.phonons.interpolated_force_constants`); with ``thermal.force_constants: invariant``
   those of :mod:`mlepi.vibrations.sum_rules` first (:func:`mlepi.vibrations.thermal.sampler_for`);
2. thermal samples at every temperature (:class:`mlepi.vibrations.thermal.HarmonicSampler`, the thermal config's seed,
   count, antithetic pairs and soft-mode policy; :func:`mlepi.vibrations.thermal.sample_rng` with purpose ``supercell``
   and n, so the stream depends on n as well);
3. HedgeNet H with GPAW's exact S (:func:`mlepi.ml.infer.predict_frames`): with a committee, the members' mean H,
   the same model as the answer's inference, so that sizes differ by their phonons alone (the members' own
   bands are not analysed here: the committee's spread is the workflow's supercell's);
4. the band analysis of :mod:`mlepi.electrons.bands` on the n x n pristine supercell, band window centred on the DFT
   Fermi level of the workflow's pristine supercell.

``supercell_convergence`` (:func:`summarize`) puts v_F(T) and the band energies at K of every size (the workflow's
own analysis included) in one table and figure (:mod:`mlepi.electrons.supercell_convergence`), with each size's
mean-square displacements and their flexural (ZA) part (:mod:`mlepi.vibrations.msd`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from tqdm import tqdm

from mlepi.config import stage_config
from mlepi.electrons import bands, committee, supercell_convergence
from mlepi.electrons.supercell_convergence import converged_size  # noqa: F401 (the stage's, for the CLI)
from mlepi.formats import provenance
from mlepi.formats.frames import write_frames
from mlepi.formats.structures import read_structure, write_structure
from mlepi.ml.infer import predict_frames
from mlepi.ml.memory import keep_freed_memory
from mlepi.ml.model import HedgeNet
from mlepi.vibrations.displace import supercell_layers, to_ase
from mlepi.vibrations.msd import branch_msd
from mlepi.vibrations.phonons import read_phonopy
from mlepi.vibrations.thermal import sample_rng, sample_structures, sampler_for, sampling_phonon


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
    target, sampler = sampler_for(phonon, thermal_cfg, n)
    pristine = to_ase(target.supercell, supercell_layers(target, primitive))
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


def summarize(summaries: dict, out_dir, phonopy_params=None, tolerance_THz: float = 0.3,
              force_constants: str = "finite_difference") -> list[dict]:
    """Stage ``supercell_convergence``: :func:`mlepi.electrons.supercell_convergence.summarize` of
    ``{n: bands.json path}``, with ``phonopy_params`` the mean-square displacements of each size's samples by
    branch (:func:`mlepi.vibrations.msd.branch_msd`; ``tolerance_THz`` and ``force_constants`` as the sampler's,
    the modes it freezes left out)."""
    msd = None
    if phonopy_params:
        phonon, frozen = sampling_phonon(read_phonopy(phonopy_params), {
            "imaginary_tolerance_THz": tolerance_THz, "soft_modes": "freeze", "force_constants": force_constants})
        msd = functools.partial(branch_msd, phonon, tolerance_THz=tolerance_THz, frozen_gamma=frozen)
    return supercell_convergence.summarize(summaries, out_dir, msd)
