"""The paper's figures (DESIGN.md §8), one ``plot_*`` function each, written atomically as files.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot, so that
plotting needs no display and leaves no global state behind. Axis labels carry units.

Stage ``bands``: the unfolded spectral function at several temperatures, v_F(T) and convergence with the
number of Monte Carlo samples. Stage ``parity``: HedgeNet against DFT (parity plots, band structure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, ScalarFormatter

from mlepi.formats.provenance import atomic_path
from mlepi.units import THZ_TO_CM


def _save(fig: Figure, path) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150)


def plot_spectral_function(k_distance, energies, spectra: Mapping[float, np.ndarray], path, *,
                           bands: Mapping[float, np.ndarray] | None = None,
                           model_bands: Mapping[float, np.ndarray] | None = None, max_columns: int = 4) -> None:
    """Thermal-averaged A(k, E) near K, one panel per temperature.

    Parameters
    ----------
    k_distance : array [n_k]
        Signed |k − K| (1/Å): negative towards Γ, positive towards M.
    energies : array [n_E]
        Energy grid (eV) relative to the energy zero of the analysis.
    spectra : mapping T (K) → array [n_k, n_E]
        A(k, E) in 1/eV.
    path : path
        Output image (format from the suffix).
    bands, model_bands : mapping T → array [n_k, n_bands], optional
        Averaged band energies (markers) and fitted model bands (lines), eV.
    """
    temps = sorted(spectra)
    n_col = min(len(temps), max_columns)
    n_row = int(np.ceil(len(temps) / n_col))
    fig = Figure(figsize=(3.2 * n_col + 0.8, 3.4 * n_row), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_row, n_col, sharey=True, squeeze=False)).ravel()
    k = np.asarray(k_distance)
    vmax = max(np.percentile(spectra[T], 99.5) for T in temps)
    for ax, T in zip(axes, temps):
        mesh = ax.pcolormesh(k, energies, np.asarray(spectra[T]).T, shading="nearest", cmap="magma",
                             vmin=0.0, vmax=vmax, rasterized=True)
        if model_bands is not None and T in model_bands:
            ax.plot(k, model_bands[T], color="cyan", lw=0.8)
        if bands is not None and T in bands:
            ax.plot(k, bands[T], ls="none", marker=".", ms=2.5, color="white")
        ax.set_title(f"T = {T:g} K")
        ax.set_xlabel(r"$k - K$ (1/Å)  [Γ ← K → M]")
        ax.set_ylim(energies[0], energies[-1])
    for ax in axes[len(temps):]:
        ax.set_visible(False)
    for ax in axes[::n_col]:
        ax.set_ylabel(r"$E - E_0$ (eV)")
    fig.colorbar(mesh, ax=axes.tolist(), label=r"$A(k, E)$ (1/eV)")
    _save(fig, path)


def plot_vf(temperatures: Sequence[float], vf, vf_err, path, *, vf_slope=None, vf_slope_err=None,
            vf_total_err=None, label: str = "SWMcC fit", slope_label: str = "outer-band slope") -> None:
    """v_F(T) (10^6 m/s) with error bars; optionally the outer-band-slope estimate beside it, and the total
    (sampling and committee) error as a shaded band around the fit."""
    fig = Figure(figsize=(4.5, 3.4), layout="constrained")
    ax = fig.subplots()
    T = np.asarray(temperatures, float)
    ax.errorbar(T, vf, yerr=_finite(vf_err), marker="o", capsize=3, label=f"{label} (sampling error)")
    if vf_total_err is not None and np.isfinite(np.asarray(vf_total_err, float)).any():
        total = _finite(vf_total_err)
        ax.fill_between(T, np.asarray(vf) - total, np.asarray(vf) + total, color="C0", alpha=0.2, lw=0,
                        label="sampling + model (committee)")
    if vf_slope is not None:
        ax.errorbar(T, vf_slope, yerr=_finite(vf_slope_err) if vf_slope_err is not None else None,
                    marker="s", capsize=3, ls="--", label=slope_label)
    ax.set_xlabel("T (K)")
    ax.set_ylabel(r"$v_F$ ($10^6$ m/s)")
    ax.legend(frameon=False)
    _save(fig, path)


def plot_convergence(convergence: Mapping[float, dict], path, *, vf_err: Mapping[float, float] | None = None,
                     independent: Mapping[float, dict] | None = None) -> None:
    """v_F and the K-point band energies against the number of Monte Carlo samples, per temperature.

    ``convergence[T]`` holds lists ``n_samples``, ``vf_1e6_m_s``, ``bands_K_eV`` ``[n, 4]`` and
    ``bands_K_err_eV`` ``[n, 4]`` (as written by :func:`mlepi.electrons.bands.convergence`); ``vf_err[T]`` (10^6 m/s),
    the bootstrap error of the final value, is drawn as a band around it. The right panel shows each band
    energy at K relative to its value from all samples, so the four bands share one scale. ``independent[T]``
    (same layout): the same from one member of each antithetic pair, drawn dashed without markers.
    """
    fig = Figure(figsize=(8.5, 3.4), layout="constrained")
    ax_v, ax_e = fig.subplots(1, 2)
    markers = "os^v"
    for T in sorted(convergence):
        c = convergence[T]
        n = np.asarray(c["n_samples"])
        line, = ax_v.plot(n, c["vf_1e6_m_s"], marker="o", ms=3, label=f"{T:g} K")
        if independent is not None and T in independent:
            ax_v.plot(independent[T]["n_samples"], independent[T]["vf_1e6_m_s"], ls="--", color=line.get_color(),
                      label=f"{T:g} K, no antithetic pairs")
            e = np.asarray(independent[T]["bands_K_eV"])
            ax_e.plot(independent[T]["n_samples"], 1e3 * (e - np.asarray(c["bands_K_eV"])[-1]), ls="--", lw=0.8,
                      color=line.get_color())
        if vf_err is not None and np.isfinite(vf_err.get(T, np.nan)):
            v = c["vf_1e6_m_s"][-1]
            ax_v.axhspan(v - vf_err[T], v + vf_err[T], color=line.get_color(), alpha=0.15)
        e, err = np.asarray(c["bands_K_eV"]), np.asarray(c["bands_K_err_eV"], float)
        for b in range(e.shape[1]):
            ax_e.errorbar(n, 1e3 * (e[:, b] - e[-1, b]), yerr=1e3 * _finite(err[:, b]), marker=markers[b % 4],
                          ms=3, capsize=2, lw=0.8, color=line.get_color(),
                          label=f"band {b + 1}" if T == min(convergence) else None)
    for ax in (ax_v, ax_e):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("number of samples")
    ax_v.set_ylabel(r"$v_F$ ($10^6$ m/s)")
    ax_e.set_ylabel(r"$E_b(K; n) - E_b(K; N)$ (meV)")
    ax_v.legend(frameon=False, fontsize="small")
    ax_e.legend(frameon=False, fontsize="small")
    _save(fig, path)


def _finite(err):
    if err is None:
        return None
    err = np.asarray(err, float)
    return np.where(np.isfinite(err), err, 0.0)


def plot_parity(forces_ref, forces_ml, h_ref, h_ml, inter, summary: dict, path) -> None:
    """Parity of HedgeNet against DFT on held-out frames: force components and H elements (intra/inter)."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax_f, ax_h = fig.subplots(1, 2)
    ax_f.scatter(forces_ref, forces_ml, s=4, alpha=0.5)
    ax_f.set_xlabel("DFT force component (eV/Å)")
    ax_f.set_ylabel("HedgeNet force component (eV/Å)")
    ax_f.set_title(f"forces: MAE {summary['force_mae_meV_per_A']:.1f} meV/Å")
    inter = np.asarray(inter, bool)
    for mask, label, color in ((~inter, "intra-layer", "C0"), (inter, "inter-layer", "C3")):
        ax_h.scatter(h_ref[mask], h_ml[mask], s=2, alpha=0.4, color=color, label=label)
    ax_h.set_xlabel("DFT H element (eV)")
    ax_h.set_ylabel("HedgeNet H element (eV)")
    ax_h.set_title(f"H: MAE {summary['h_mae_meV']:.1f} meV (intra {summary['h_mae_intra_meV']:.1f}, "
                   f"inter {summary['h_mae_inter_meV']:.1f})", fontsize=9)
    ax_h.legend(markerscale=4, loc="upper left")
    for ax, x, y in ((ax_f, forces_ref, forces_ml), (ax_h, h_ref, h_ml)):
        lo, hi = float(min(np.min(x), np.min(y))), float(max(np.max(x), np.max(y)))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.7)
    _save(fig, path)


def plot_band_structure(bands: dict, path, *, held_out: Sequence[bool], min_weight: float = 0.05,
                        window: float = 3.0, model_names: Sequence[str] | None = None) -> None:
    """Unfolded bands, DFT against HedgeNet (or the model of ``model_names``, one per panel), one panel per frame
    (:func:`mlepi.evaluation.parity.band_structures`).

    Each supercell state is a dot at its primitive k with an area proportional to its unfolded weight;
    states with weight below ``min_weight`` are left out. Energies relative to the DFT Fermi level (eV).
    """
    frames = bands["frames"]
    fig = Figure(figsize=(4.2 * len(frames), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(frames), sharey=True))
    k = np.asarray(bands["k_distance_1_A"])
    names = list(model_names or ["HedgeNet"] * len(frames))
    for ax, frame, unseen, name in zip(axes, frames, held_out, names):
        for key, color, size in (("dft", "k", 9.0), ("ml", "C3", 3.0)):
            e, w = frame[key]
            kk = np.broadcast_to(k[:, None], e.shape)
            keep = (w > min_weight) & (np.abs(e) <= window)
            ax.scatter(kk[keep], e[keep], s=size * w[keep], color=color, linewidths=0)
        ax.set_xticks(bands["ticks_1_A"], ["Γ" if t == "G" else t for t in bands["labels"]])
        for t in bands["ticks_1_A"][1:-1]:
            ax.axvline(t, color="0.7", lw=0.6)
        ax.axhline(0.0, color="0.7", lw=0.6, ls="--")
        ax.set_xlim(k[0], k[-1])
        ax.set_ylim(-window, window)
        kind = "held out" if unseen else "in training set"
        model = "" if model_names is None else f"{name}, "
        ax.set_title(f"{model}{frame['name']} ({kind}): eig MAE {frame['eig_mae_meV']:.0f} meV", fontsize=9)
        ax.set_xlabel("primitive k path")
    axes[0].set_ylabel("E − E_F(DFT, pristine) (eV)")
    # Proxy handles: the scatter markers' sizes follow the weights, which makes poor legend entries.
    handles = [Line2D([], [], ls="none", marker="o", ms=ms, color=c) for c, ms in (("k", 5), ("C3", 3))]
    for ax, name in zip(axes, names) if model_names is not None else [(axes[0], "HedgeNet")]:
        ax.legend(handles, ["DFT (GPAW)", name], loc="lower right")
    _save(fig, path)


def plot_performance(result: dict, path) -> None:
    """Log-log cost of HedgeNet inference, GPAW and the band-stage eigensolvers against the number of atoms,
    with the fitted inference exponent, and peak memory of inference (``mlepi.evaluation.performance``)."""
    fig = Figure(figsize=(10.5, 4.0), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    scaling = result["scaling"]
    n = np.array([r["n_atoms"] for r in scaling], dtype=float)
    total = np.array([r["total_s"] for r in scaling])
    dtype = result.get("inference_dtype", "float64")
    ax_t.loglog(n, total, "o-", color="C0", label=f"HedgeNet F + H, {dtype} (N^{result['scaling_exponent']:.2f})")
    ax_t.loglog(n, [r["model_s"] for r in scaling], ".--", color="C0", alpha=0.6, label="  network only")
    ax_t.loglog(n, [r["neighbours_s"] for r in scaling], ".:", color="C0", alpha=0.6, label="  neighbour lists")
    if dtype != "float64":  # the same in float64, for reference
        ax_t.loglog(n, [r["total_s"] for r in result["scaling_float64"]], "o--", color="C7", markersize=3,
                    label=f"  in float64 (N^{result['scaling_exponent_float64']:.2f})")
    dft = result["dft"]
    ax_t.loglog([d["n_atoms"] for d in dft], [d["scf_forces_s"] for d in dft], "s-", color="C3",
                label=f"GPAW SCF + forces ({result['speedup_vs_dft']:.0f}x at {dft[0]['n_atoms']} atoms)")
    bands = result["band_solver"]
    ax_t.loglog([b["n_atoms"] for b in bands], [b["sparse_s"] for b in bands], "^-", color="C2",
                label="eigenstates near E_F, sparse shift-invert")
    dense = [b for b in bands if "dense_s" in b]
    ax_t.loglog([b["n_atoms"] for b in dense], [b["dense_s"] for b in dense], "v--", color="C2",
                label="all eigenstates, dense")
    ax_t.set_xlabel("atoms")
    ax_t.set_ylabel("wall time per structure (s)")
    ax_t.legend(fontsize=7)
    ax_m.loglog(n, np.array([r["peak_rss_MiB"] for r in scaling]) / 1024, "o-", color="C0", label="peak RSS")
    ax_m.loglog(n, np.array([r["baseline_rss_MiB"] for r in scaling]) / 1024, ":", color="gray",
                label="after imports")
    ax_m.set_xlabel("atoms")
    ax_m.set_ylabel("memory of one inference process (GiB)")
    ax_m.legend(fontsize=7)
    device = result["machine"]
    fig.suptitle(f"{device['cpu']}, {device['torch_threads']} torch threads", fontsize=8)
    _save(fig, path)


def plot_performance_gpu(result: dict, cpu: dict | None, path) -> None:
    """HedgeNet inference on the GPU against the number of atoms (network, neighbour lists on the CPU, total),
    beside the CPU's total when ``cpu`` (``performance.json``) is given; and the cost per structure when many
    structures share one batch (:func:`mlepi.evaluation.performance.run_gpu`)."""
    fig = Figure(figsize=(10.5, 4.0), layout="constrained")
    ax_t, ax_b = fig.subplots(1, 2)
    scaling = result["scaling"]
    n = np.array([r["n_atoms"] for r in scaling], dtype=float)
    ax_t.loglog(n, [r["total_s"] for r in scaling], "o-", color="C1",
                label=f"GPU total (N^{result['scaling_exponent']:.2f})")
    ax_t.loglog(n, [r["model_s"] for r in scaling], ".--", color="C1", alpha=0.6, label="  network on the GPU")
    ax_t.loglog(n, [r["neighbours_s"] for r in scaling], ".:", color="C1", alpha=0.6,
                label="  neighbour lists (CPU) + copy")
    if cpu is not None:
        ax_t.loglog([r["n_atoms"] for r in cpu["scaling"]], [r["total_s"] for r in cpu["scaling"]], "o-",
                    color="C0", label=f"CPU total, {cpu['machine']['cpus']} cores")
        dft = cpu["dft"]
        ax_t.loglog([d["n_atoms"] for d in dft], [d["scf_forces_s"] for d in dft], "s-", color="C3",
                    label="GPAW SCF + forces (CPU)")
    ax_t.set_xlabel("atoms")
    ax_t.set_ylabel("wall time per structure (s)")
    ax_t.legend(fontsize=7)
    for rows, color, label in ((result["batched"], "C1", "GPU"),
                               ((cpu or {}).get("ml_batched") or [], "C0", "CPU")):
        if rows:
            ax_b.loglog([r["n_structures"] for r in rows], [r["per_structure_s"] for r in rows], "o-",
                        color=color, label=f"{label}, {rows[0]['n_atoms'] // rows[0]['n_structures']} atoms each")
    if "speedup_vs_dft_batched" in result:
        ax_b.set_title(f"{result['speedup_vs_dft_batched']:,.0f}x GPAW (CPU) per structure", fontsize=8)
    ax_b.set_xlabel("structures per batch")
    ax_b.set_ylabel("wall time per structure (s)")
    ax_b.legend(fontsize=7)
    fig.suptitle(f"{result['device']}, {result['dtype']}", fontsize=8)
    _save(fig, path)


def plot_learning_curves(curves: Mapping[str, Sequence[dict]], path) -> None:
    """Validation errors against epoch (``metrics.csv`` rows of ``mlepi train``), one line per model: H (meV),
    forces (meV/Å), energy (meV/atom), log scale."""
    fig = Figure(figsize=(10.5, 3.4), layout="constrained")
    panels = (("val_H_mae_meV", "held-out H MAE (meV)"), ("val_forces_mae_meV_per_A", "held-out force MAE (meV/Å)"),
              ("val_energy_mae_meV_per_atom", "held-out energy MAE (meV/atom)"))
    for ax, (key, label) in zip(fig.subplots(1, len(panels)), panels):
        for k, (name, rows) in enumerate(curves.items()):
            ax.semilogy([r["epoch"] for r in rows], [r[key] for r in rows], color=f"C{k}", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_active_learning(rows: Sequence[dict], path) -> None:
    """Per active-learning round (``learning.csv`` rows of ``mlepi learning``): the true error on the test set
    (committee mean, and the worst member) beside the committee's spread on the same frames, for the forces,
    H and the band energies at K."""
    fig = Figure(figsize=(10.5, 3.4), layout="constrained")
    rounds = [r["round"] for r in rows]
    panels = (("force_mae_meV_per_A", "forces_spread_meV_per_A", "forces on the test set (meV/Å)"),
              ("h_mae_meV", "H_spread_meV", "H on the test set (meV)"),
              ("eig_K_image_aligned_mae_meV", None, "band energies at K, |ML − GPAW| (meV)"))
    for ax, (error, spread, label) in zip(fig.subplots(1, len(panels)), panels):
        ax.plot(rounds, [r[f"mean_{error}"] for r in rows], "o-", color="C0", label="error of the mean")
        ax.plot(rounds, [r[f"worst_member_{error}"] for r in rows], "s--", color="C1", label="worst member's error")
        if spread is not None:
            ax.plot(rounds, [r[spread] for r in rows], "^:", color="C2", label="committee spread")
        ax.set_xlabel("active-learning round")
        ax.set_ylabel(label)
        ax.set_xticks(rounds)
        ax.set_ylim(bottom=0)
    fig.axes[0].legend(fontsize=7)  # the panel with all three lines
    _save(fig, path)


def plot_data_scaling(document: dict, path) -> None:
    """Held-out errors on the test frames against the number of training frames (``learning_curve.json`` of
    ``benchmarks/learning_curve.py``), log-log, with the fitted power laws extended to their goals (dashed), and
    the static-lattice v_F of each model against DFT's."""
    fig = Figure(figsize=(11.5, 3.4), layout="constrained")
    rows, fits = document["rows"], document["fits"]
    n = np.array([r["n_train"] for r in rows], float)
    n_fit = np.array(document.get("fitted_n_train", n), float)
    panels = ((("h_mae_meV", "all"), ("h_mae_intra_meV", "intra-layer"), ("h_mae_inter_meV", "inter-layer")),
              (("eig_mae_aligned_meV", "aligned"), ("eig_mae_meV", "raw")))
    labels = ("test H MAE (meV)", "test eigenvalue MAE near $E_F$ (meV)")
    axes = fig.subplots(1, 3)
    for ax, keys, label in zip(axes, panels, labels):
        for k, (key, name) in enumerate(keys):
            ax.loglog(n, [r["test"][key] for r in rows], "o-", color=f"C{k}", label=name)
            fit = fits.get(key)
            if fit:
                reach = fit["frames_for_goal"] or n_fit.max()
                x = np.geomspace(n_fit.min(), max(n_fit.max(), min(reach, 1e4)), 50)
                ax.loglog(x, fit["prefactor"] * x ** -fit["exponent"], "--", color=f"C{k}", lw=0.8)
                ax.axhline(fit["goal"], color="k", lw=0.6, ls=":")
                if fit["frames_for_goal"] and fit["frames_for_goal"] <= 1e4:  # where the trend meets the goal
                    ax.annotate(f"{fit['frames_for_goal']:.0f}", (fit["frames_for_goal"], fit["goal"]),
                                color=f"C{k}", fontsize=7, ha="center", va="top", xytext=(0, -3),
                                textcoords="offset points")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    axes[2].semilogx(n, [100 * r["vf_static_rel_err"] for r in rows], "o-", color="C0")
    goal = 100 * fits["vf_static_abs_rel_err"]["goal"]
    for sign in (-1, 1):
        axes[2].axhline(sign * goal, color="k", lw=0.6, ls=":")
    axes[2].axhline(0, color="k", lw=0.6)
    axes[2].set_ylabel(r"static-lattice $v_F$, HedgeNet vs DFT (%)")
    for ax in axes:  # ticks at the measured sizes, plain numbers
        ax.set_xticks(n, [f"{v:g}" for v in n])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("DFT training frames")
    _save(fig, path)


def plot_vf_orders(document: dict, path) -> None:
    """v_F(T) from the full and the linearized H (bootstrap errors), the full one's total error and the largest
    supercell's v_F, the special displacement, and the static lattice of HedgeNet and DFT
    (``renormalization.json`` of :mod:`mlepi.electrons.renormalization`)."""
    fig = Figure(figsize=(8.5, 4.2), layout="constrained")
    ax_v, ax_k = fig.subplots(1, 2)
    rows = document["temperatures"]
    T = np.array([r["T_K"] for r in rows], float)
    for key, label, marker in (("full", "full H(u)", "o"), ("linear", "linear H (first-order EPI)", "s")):
        ax_v.errorbar(T, [r[f"vf_{key}_1e6_m_s"] for r in rows],
                      yerr=_finite([r[f"vf_{key}_err_1e6_m_s"] for r in rows]), marker=marker, capsize=3, label=label)
    # The total error of the full v_F (samples, committee, DFT bias, supercell; renormalization.error_budget)
    # and the largest supercell's v_F, where the budget has them
    v_static = document["static"]["ml"]["vf_1e6_m_s"]
    total = np.array([r.get("renormalization_total_err_percent", np.nan) for r in rows], float) * v_static / 100
    v_full = np.array([r["vf_full_1e6_m_s"] for r in rows], float)
    if np.isfinite(total).any():
        ax_v.fill_between(T, v_full - total, v_full + total, color="C0", alpha=0.15, lw=0, label="total error")
    larger = [(r["T_K"], r["vf_supercell_largest_1e6_m_s"], r["supercell_largest"]) for r in rows
              if r.get("supercell_largest")]
    if larger:
        ax_v.plot([t for t, *_ in larger], [v for _, v, _ in larger], "^", color="C2",
                  label=f"{larger[0][2]}x{larger[0][2]} supercell")
    special = [(r["T_K"], r["vf_special_1e6_m_s"]) for r in rows if r.get("vf_special_1e6_m_s") is not None]
    if special:
        ax_v.plot(*zip(*special), "D", mfc="none", label="special displacement")
    for key, ls, label in (("ml", "-", "static, HedgeNet"), ("dft", ":", "static, DFT")):
        ax_v.axhline(document["static"][key]["vf_1e6_m_s"], color="k", ls=ls, lw=0.8, label=label)
    ax_v.set_xlabel("T (K)")
    ax_v.set_ylabel(r"$v_F$ ($10^6$ m/s)")
    ax_v.legend(frameon=False, fontsize="x-small", ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    for b, marker, color in ((0, "o", "C0"), (3, "v", "C3")):  # the outer bands at K: ±γ1 in the static lattice
        for key, ls, mfc in (("full", "-", color), ("linear", "--", "none")):
            ax_k.errorbar(T, [1e3 * r[f"bands_K_shift_{key}_eV"][b] for r in rows],
                          yerr=_finite([1e3 * r[f"bands_K_shift_{key}_err_eV"][b] for r in rows]), marker=marker,
                          ls=ls, color=color, mfc=mfc, capsize=3, label=f"band {b + 1}, {key} H")
    ax_k.axhline(0.0, color="k", lw=0.5)
    ax_k.set_xlabel("T (K)")
    ax_k.set_ylabel(r"$E_b(K; T) - E_b(K; \mathrm{static})$ (meV)")
    ax_k.legend(frameon=False, fontsize="small")
    _save(fig, path)


def plot_crosscheck(rows: Sequence[dict], path) -> None:
    """HedgeNet against DFT band energies at K on the same displaced supercells (``crosscheck`` rows)."""
    fig = Figure(figsize=(4.2, 3.8), layout="constrained")
    ax = fig.subplots()
    for T in sorted({r["T_K"] for r in rows}):
        sel = [r for r in rows if r["T_K"] == T]
        dft = [r[f"band{b}_K_dft_eV"] for r in sel for b in range(1, 5)]
        ml = [r[f"band{b}_K_ml_eV"] for r in sel for b in range(1, 5)]
        ax.scatter(dft, ml, s=12, label=f"{T:g} K")
    if rows:
        lim = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
        ax.plot(lim, lim, "k-", lw=0.5)
        ax.legend(frameon=False, fontsize="small")
    ax.set_xlabel("DFT band energy at K (eV)")
    ax.set_ylabel("HedgeNet band energy at K (eV)")
    _save(fig, path)


def plot_supercell_convergence(rows: Sequence[dict], path) -> None:
    """v_F, the outer band energies at K and <u_z^2> (all modes and the flexural ZA part) against the supercell
    size, per temperature (``convergence.csv``)."""
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax_v, ax_k, ax_u = fig.subplots(1, 3)
    for T in sorted({r["T_K"] for r in rows}):
        sel = sorted((r for r in rows if r["T_K"] == T), key=lambda r: r["supercell"])
        n = [r["supercell"] for r in sel]
        line = ax_v.errorbar(n, [r["vf_1e6_m_s"] for r in sel], yerr=_finite([r["vf_err_1e6_m_s"] for r in sel]),
                             marker="o", capsize=3, label=f"{T:g} K")
        color = line.lines[0].get_color()
        for b, marker in ((1, "o"), (4, "v")):
            ax_k.errorbar(n, [1e3 * r[f"band{b}_K_eV"] for r in sel],
                          yerr=_finite([1e3 * r[f"band{b}_K_err_eV"] for r in sel]), marker=marker, capsize=3,
                          color=color, label=f"band {b}" if T == min(r["T_K"] for r in rows) else None)
        if all(np.isfinite(r["u2_z_A2"]) for r in sel):
            ax_u.plot(n, [1e4 * r["u2_z_A2"] for r in sel], "o-", color=color,
                      label="all modes" if T == min(r["T_K"] for r in rows) else None)
            ax_u.plot(n, [1e4 * r["u2_z_ZA_A2"] for r in sel], "s--", color=color,
                      label="ZA" if T == min(r["T_K"] for r in rows) else None)
    for ax in (ax_v, ax_k, ax_u):
        ax.set_xlabel("supercell n (n x n)")
        ax.set_xticks(sorted({r["supercell"] for r in rows}))
    ax_v.set_ylabel(r"$v_F$ ($10^6$ m/s)")
    ax_k.set_ylabel(r"outer bands at K (meV)")
    ax_u.set_ylabel(r"$\langle u_z^2 \rangle$ ($10^{-4}$ Å$^2$)")
    if ax_u.lines:
        ax_u.legend(frameon=False, fontsize="small")
    else:  # no phonons given: say so rather than leave an empty frame
        ax_u.text(0.5, 0.5, "no phonons given", ha="center", va="center", transform=ax_u.transAxes)
    ax_v.legend(frameon=False, fontsize="small")
    ax_k.legend(frameon=False, fontsize="small")
    _save(fig, path)


def plot_phonon_bands(curves: Sequence[tuple], labels, title: str, path) -> None:
    """Phonon dispersions along one path (stages ``phonons``, ``phonons_ml``): one ``(phonopy band structure,
    legend label, matplotlib style)`` per set of curves, frequencies in cm^-1."""
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for bands, legend, style in curves:
        ticks = [0.0]
        for k, (dist, freq) in enumerate(zip(bands.distances, bands.frequencies)):
            lines = ax.plot(dist, freq * THZ_TO_CM, style, lw=1)
            if k == 0 and len(curves) > 1:
                lines[0].set_label(legend)
            ticks.append(dist[-1])
    ax.set_xticks(ticks, labels)
    ax.set_xlim(0, ticks[-1])
    ax.axhline(0, color="k", lw=0.5)
    for x in ticks[1:-1]:
        ax.axvline(x, color="k", lw=0.5)
    ax.set_ylabel("Frequency (cm$^{-1}$)")
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend(loc="lower right")
    fig.tight_layout()
    _save(fig, path)
