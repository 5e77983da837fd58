"""The model error of the band analysis: every committee member's bands on the same thermal samples.

``mlepi infer`` with a committee (``train.committee`` > 1) writes each member's H beside the mean
(``H_committee``, ``docs/data.md``). The band analysis of the mean is the answer; this module analyses each
member's H of the same samples alike and reduces them, per temperature, to the committee's spread:

- ``vf_members_1e6_m_s``: v_F of each member's thermal average (SWMcC fit, as for the mean);
- ``vf_model_err_1e6_m_s``: their standard deviation (ddof 1), the model error of the thermal average;
- ``bands_K_members_eV`` and ``bands_K_model_err_eV``: the four band energies at K, likewise;
- ``sample_bands_K_spread_eV`` and ``sample_reference_spread_eV``: per sample, the members' spread of the band
  energies at K (on each member's own zero) and of that zero (the band touching at K, or the Fermi level).

Members are compared on the samples every member and the mean analysed (a sample with a spurious state in one
member's window is left out of all of them), so that their spread is one of models, not of samples.
"""

from __future__ import annotations

import copy

import numpy as np

from mlepi.errors import MlepiError


class CommitteeBandsError(MlepiError, ValueError):
    """The frames of one band analysis hold committees of different sizes, or some frames none."""


def drop_members(frame) -> None:
    """Take the members' arrays off a committee's frame, leaving the mean: a band analysis of it then analyses
    the mean alone."""
    frame.H_committee = frame.forces_committee = frame.energy_committee = None


def member_jobs(jobs: list[tuple]) -> list[list[tuple]]:
    """Per member, the jobs ``(frame, basis, source)`` of :func:`mlepi.electrons.bands.analyse_sample` with
    that member's H; ``[]`` when the frames hold no committee. The committee arrays are taken off every frame
    (the mean's jobs included), so that no job carries all members' H to a worker."""
    sizes = {None if frame.H_committee is None else len(frame.H_committee) for frame, _, _ in jobs}
    if len(sizes) > 1:
        raise CommitteeBandsError(f"{sorted({source for _, _, source in jobs})}: frames with committees of "
                                  f"sizes {sorted(sizes, key=str)}; infer every sample with the same models")
    size = sizes.pop() if sizes else None
    if size is None:
        return []
    members = [[] for _ in range(size)]
    for frame, basis, source in jobs:
        H_committee = frame.H_committee
        drop_members(frame)
        for m, H in enumerate(H_committee):
            member = copy.copy(frame)
            member.H = H
            members[m].append((member, basis, source))
    return members


def summary(mean_samples: list, members: list[list], fit_vf, index_K: int) -> dict:
    """The committee's spread at one temperature (module docstring) from each member's analysed samples
    (:class:`mlepi.electrons.bands.SampleBands`, or the record of a rejected one); ``fit_vf(bands)`` is v_F
    (1e6 m/s) of averaged bands ``[n_k, 4]``; ``mean_samples`` are the mean's accepted samples, ``index_K``
    the index of K on the path."""
    accepted = [{s.name: s for s in member if hasattr(s, "bands")} for member in members]
    names = [s.name for s in mean_samples if all(s.name in member for member in accepted)]
    nan = float("nan")
    out = {"size": len(members), "sample_names": names,
           "left_out": sorted({s.name for s in mean_samples} - set(names))}
    if not names:
        return {**out, "vf_members_1e6_m_s": [nan] * len(members), "vf_model_err_1e6_m_s": nan}
    stacks = np.array([[member[name].bands for name in names] for member in accepted])  # [M, n, n_k, 4]
    references = np.array([[member[name].reference for name in names] for member in accepted])  # [M, n]
    vf = np.array([fit_vf(stack.mean(axis=0)) for stack in stacks])
    at_K = stacks[:, :, index_K]  # [M, n, 4]
    return {**out, "vf_members_1e6_m_s": vf.tolist(), "vf_model_err_1e6_m_s": float(np.std(vf, ddof=1)),
            "bands_K_members_eV": at_K.mean(axis=1).tolist(),
            "bands_K_model_err_eV": at_K.mean(axis=1).std(axis=0, ddof=1).tolist(),
            "sample_bands_K_spread_eV": at_K.std(axis=0, ddof=1).tolist(),
            "sample_reference_spread_eV": references.std(axis=0, ddof=1).tolist()}


def total_error(sampling: float, model: float) -> float:
    """Sampling and model error added in quadrature (independent); NaN where the model error is unknown."""
    return float(np.hypot(sampling, model))
