"""``mlepi <stage>``: one subcommand per workflow rule; each parses its arguments and calls its stage's ``run``.

Every stage takes its configuration either as ``--config FILE`` (a whole config file, validated and completed
with defaults; what a user types) or as ``--params JSON`` (the keys the stage reads; what a Snakemake rule
passes, so that a change elsewhere in the config does not rerun it). The stage's ``run()`` keeps the keys it
reads (:func:`mlepi.config.stage_config`); which keys those are is written once, in the schema.

A command imports its stage's module only when it runs (:data:`STAGE_MODULES`): the stage modules import torch
and PyG (1-4 s), GPAW and matplotlib at their top, and GPAW must be imported after :func:`mlepi.dft.mpi.prepare`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from mlepi import config as config_mod
from mlepi.dft import mpi
from mlepi.errors import MlepiError

# The module whose run() each command calls.
STAGE_MODULES = {
    "structure": "mlepi.dft.structure",
    "displace": "mlepi.vibrations.displace",
    "dft": "mlepi.dft.scf",
    "phonons": "mlepi.vibrations.phonons",
    "phonons_ml": "mlepi.ml.phonons_ml",
    "thermal": "mlepi.vibrations.thermal",
    "dataset": "mlepi.formats.dataset",
    "train": "mlepi.ml.train",
    "infer": "mlepi.ml.infer",
    "predict": "mlepi.ml.infer",
    "linearize": "mlepi.ml.linearize",
    "parity": "mlepi.evaluation.parity",
    "bands": "mlepi.electrons.bands",
    "select": "mlepi.ml.active",
    "learning": "mlepi.ml.active",
    "testset": "mlepi.evaluation.testset",
    "renormalization": "mlepi.electrons.renormalization",
    "supercell_bands": "mlepi.ml.supercell_bands",
    "supercell_convergence": "mlepi.ml.supercell_bands",
    "accuracy": "mlepi.evaluation.accuracy",
    "peers": "mlepi.evaluation.peers",
    "peers_h": "mlepi.evaluation.peers_h",
    "export-deeph": "mlepi.formats.deeph",
    "inspect": "mlepi.formats.provenance",
    "performance": "mlepi.evaluation.performance",
    "compare": "mlepi.evaluation.metrics",
}


def _add_config(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", metavar="FILE", help="config file (YAML), e.g. config/config.yaml")
    group.add_argument("--params", metavar="JSON", help="the stage's config keys as JSON (Snakemake)")


def _config(args) -> dict:
    """The config the command was given: a whole file (validated, defaults filled), the rule's JSON, or none
    (the schema defaults: the embedded default system). The stage keeps the keys it reads."""
    if args.params is not None:
        return config_mod.parse_params(args.params)
    if args.config is not None:
        return config_mod.load(args.config)
    return {}


def cmd_structure(stage, args):
    stage.run(args.out, _config(args), log_path=args.log)


def cmd_displace(stage, args):
    paths = stage.run(args.structure, args.out_dir, _config(args))
    print(f"wrote {len(paths)} supercells to {args.out_dir}")


def cmd_dft(stage, args):
    stage.run(args.structure, args.out, _config(args), name=args.name, log_path=args.log, index=args.index,
              tile_to=args.tile_to)


def cmd_phonons(stage, args):
    summary = stage.run(args.disp, args.pristine, args.fd, args.out_dir, _config(args))
    print(json.dumps({k: v for k, v in summary.items() if k != "provenance"}, indent=1))


def cmd_phonons_ml(stage, args):
    summary = stage.run(args.model, args.disp, args.pristine, args.dft_phonons, args.out_dir, _config(args))
    print(json.dumps({k: v for k, v in summary.items() if k != "provenance"}, indent=1))


def cmd_thermal(stage, args):
    paths = stage.run(args.phonopy, args.pristine, args.temperature, args.purpose, args.out, _config(args),
                      round_index=args.round)
    print(f"wrote {len(paths)} file(s) of thermal samples at {args.temperature} K")


def cmd_dataset(stage, args):
    n = stage.run(args.frames, args.out, extxyz_path=args.extxyz)
    print(f"wrote {n} frames to {args.out}")


def cmd_train(stage, args):
    stage.run(args.dataset, args.out_dir, _config(args), member=args.member, resume=not args.restart,
              init=args.init)


def cmd_infer(stage, args):
    stage.run(args.model, args.structures, args.out, overlap=args.overlap, device=args.device, workers=args.workers,
              dtype=None if args.dtype == "model" else args.dtype)


def cmd_linearize(stage, args):
    stage.run(args.model, args.frames, args.pristine, args.out)


def cmd_renormalization(stage, args):
    doc = stage.run(args.primitive, args.supercell, args.bands, args.bands_linear, args.static_ml, args.static_dft,
                    args.out_dir, _config(args), special_paths=args.special, check_dft_paths=args.check_dft,
                    infer_paths=args.infer, supercells_path=args.supercells, workers=args.workers)
    print(f"static v_F: HedgeNet {doc['static']['ml']['vf_1e6_m_s']:.4f}, DFT {doc['static']['dft']['vf_1e6_m_s']:.4f}"
          f" (1e6 m/s, {doc['static_vf_difference_percent']:+.2f} %)")
    for r in doc["temperatures"]:
        print(f"T = {r['T_K']:g} K: v_F renormalization full {r['renormalization_full_percent']:+.2f} %, linear "
              f"{r['renormalization_linear_percent']:+.2f} %, second order {r['second_order_percent']:+.2f} +- "
              f"{r['second_order_err_percent']:.2f} %, share {r['second_order_share']:.2f} +- "
              f"{r['second_order_share_err']:.2f}" + ("" if r["share_resolved"] else " (not resolved)"))
        print(f"T = {r['T_K']:g} K: {r['verdict']}")


def cmd_supercell_bands(stage, args):
    doc = stage.run(args.model, args.phonopy, args.primitive, args.reference, args.n, args.out_dir, _config(args),
                    workers=args.workers)
    for r in doc["temperatures"]:
        print(f"{args.n}x{args.n}, T = {r['T_K']:g} K: v_F = {r['vf_1e6_m_s']:.4f} 1e6 m/s ({r['n_samples']} samples)")


def cmd_supercell_convergence(stage, args):
    if len(args.sizes) != len(args.bands):
        raise config_mod.ConfigError(f"--sizes has {len(args.sizes)} values but --bands {len(args.bands)} files")
    rows = stage.summarize(dict(zip(args.sizes, args.bands)), args.out_dir, args.phonopy, args.tolerance_THz,
                           args.force_constants)
    for T in sorted({r["T_K"] for r in rows}):
        size = stage.converged_size(rows, T)
        print(f"T = {T:g} K: " + (f"v_F within error of the {max(args.sizes)}x{max(args.sizes)} value from "
                                  f"{size}x{size} on" if size else f"v_F not shown converged up to "
                                  f"{max(args.sizes)}x{max(args.sizes)}"))
    print(f"wrote {len(rows)} rows to {args.out_dir}/convergence.csv")


def cmd_parity(stage, args):
    summary = stage.run(args.model, args.dataset, args.out_dir, primitive=args.primitive)
    print(json.dumps({k: v for k, v in summary.items() if k != "provenance"}, indent=1))


def cmd_bands(stage, args):
    stage.run(args.frames, args.primitive, args.supercell, args.out_dir, _config(args), reference=args.reference,
              workers=args.workers)


def cmd_select(stage, args):
    rows = stage.run(args.frames, args.primitive, args.supercell, args.out, args.scores, args.per_round,
                     _config(args), reference=args.reference, round_index=args.round)
    for row in rows[:args.per_round]:
        print(f"selected {row['name']} ({row['frames_file']}): band spread at K {row['band_spread_meV']:.2f} meV, "
              f"forces {row['forces_spread_meV_per_A']:.1f} meV/A, score {row['score']:.2f}")


def cmd_learning(stage, args):
    for row in stage.learning(args.testsets, args.out_csv, args.out_png):
        print(f"round {row['round']}: test forces {row['mean_force_mae_meV_per_A']:.1f} meV/A (spread "
              f"{row['forces_spread_meV_per_A'] or float('nan'):.1f}), H {row['mean_h_mae_meV']:.2f} meV, "
              f"K bands {row['mean_eig_K_image_aligned_mae_meV'] or float('nan'):.1f} meV")


def cmd_testset(stage, args):
    r = stage.run(args.models, args.test_frames, args.dataset, args.out, _config(args), primitive=args.primitive)
    mean = r["mean"]
    print(f"test set ({len(r['frames'])} frames): forces {mean['force_mae_meV_per_A']:.1f} meV/A, H "
          f"{mean['h_mae_meV']:.2f} meV, band energies at K {mean['eig_K_image_aligned_mae_meV'] or float('nan'):.1f}"
          " meV (committee mean)")
    for key, goal in r["goals"].items():
        print(f"goal {key} <= {goal['goal']}: worst member {goal['worst_member']}, met: {goal['met']}")
    print(f"-> {args.out}")


def cmd_compare(stage, args):
    result = stage.compare(args.a, args.b)
    print(json.dumps(result, indent=2) if args.json else stage.format_table(result))


def cmd_performance(stage, args):
    r = stage.run(args.model, args.primitive, args.pristine, args.out, args.figure, _config(args),
                  workflow_path=args.workflow)
    print(f"speed-up vs GPAW {r['speedup_vs_dft']:.0f}x, scaling exponent {r['scaling_exponent']:.3f}, "
          f"time per atom {r['time_per_atom_sizes'][1]} vs {r['time_per_atom_sizes'][0]} atoms: "
          f"{r['time_per_atom_ratio_1e4_vs_1e2']:.2f}x -> {args.out}")


def cmd_peers(stage, args):
    r = stage.run(args.model, args.dataset, args.disp, args.pristine, args.dft_phonons, args.out_dir, _config(args),
                  test_paths=args.test_frames)
    for name, m in r["models"].items():
        errs = ", ".join(f"{part} forces {m[part]['force_mae_meV_per_A']:.1f} meV/A, energy "
                         f"{m[part]['energy_mae_meV_per_atom']:.2f} meV/atom"
                         for part in ("validation", "test") if m[part])
        print(f"{name}: {errs}; phonons above 1 THz {100 * m['phonons']['freq_rel_err_mean']:.2f} % mean, "
              f"{100 * m['phonons']['freq_rel_err_max']:.1f} % max; {1e3 * m['time_per_structure_s']:.1f} ms")


def cmd_peers_h(stage, args):
    r = stage.run(args.model, args.dataset, args.primitive, args.out_dir, _config(args), test_paths=args.test_frames)
    for name, m in r["models"].items():
        errs = ", ".join(f"{part} H {m[part]['h_mae_meV']:.2f} meV, eigenvalues {m[part]['eig_mae_meV']:.1f} meV"
                         for part in ("validation", "test") if part in m)
        vf = "failed" if m["vf_static_rel_err"] is None else f"{100 * m['vf_static_rel_err']:+.2f} % against DFT"
        print(f"{name}: {errs}; static v_F {vf}; "
              f"{1e3 * m['time_per_structure_s']:.1f} ms")


def cmd_accuracy(stage, args):
    r = stage.run(args.model, args.dataset, args.out, _config(args), ablation_path=args.ablation,
                  phonons_ml_path=args.phonons_ml, ablation_phonons_ml_path=args.ablation_phonons_ml,
                  test_paths=args.test_frames, primitive=args.primitive)

    def errors(e):
        return (f"H {e['h_mae_meV']:.2f} meV (intra {e['h_mae_intra_meV']:.2f}, inter {e['h_mae_inter_meV']:.2f}), "
                f"forces {e['force_mae_meV_per_A']:.2f} meV/A, eigenvalues {e['eig_mae_meV']:.1f} meV "
                f"({e['eig_mae_aligned_meV']:.1f} aligned)")

    print(f"held out: {errors(r)}")
    if args.primitive:
        print(f"static lattice: v_F {r['vf_static_ml_1e6_m_s']:.4f} (HedgeNet) against {r['vf_static_dft_1e6_m_s']:.4f}"
              f" (DFT) 1e6 m/s, {100 * r['vf_static_rel_err']:+.2f} %")
    if args.ablation:
        print(f"one edge type: H {r['ablation_h_mae_meV']:.2f} meV, "
              f"forces {r['ablation_force_mae_meV_per_A']:.2f} meV/A")
    if args.test_frames:
        print(f"test frames ({len(r['test']['frames'])}): {errors(r['test'])}")
    print(f"-> {args.out}")


def cmd_export_deeph(stage, args):
    folders = stage.export(args.frames, args.out_dir)
    print(f"wrote {len(folders)} DeepH folder(s) to {args.out_dir}")


def cmd_inspect(stage, args):
    for path in args.files:
        found = stage.read(path)
        print(json.dumps(found, indent=1) if args.json else stage.format_record(found))


def _add_peer_inputs(parser: argparse.ArgumentParser, out_dir_help: str) -> None:
    """What both peer comparisons take: config, HedgeNet and its dataset, test frames, output folder."""
    _add_config(parser)
    parser.add_argument("model", help="trained HedgeNet (model.pt): its validation_frames define the split")
    parser.add_argument("dataset", help="the dataset it was trained on (.h5)")
    parser.add_argument("--test-frames", nargs="+", default=(), metavar="H5",
                        help="DFT frames files never trained on (e.g. results/<system>/dft/check_*.h5)")
    parser.add_argument("--out-dir", required=True, help=out_dir_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlepi",
        description="Machine-learning electron-phonon interactions from finite differences. Each "
                    "subcommand is one stage of the Snakemake workflow; run `mlepi STAGE --help`.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    p = sub.add_parser("structure", help="build and relax the primitive cell (GPAW LCAO, PBE+D3)")
    _add_config(p)
    p.add_argument("--out", required=True, help="relaxed primitive cell (.extxyz)")
    p.add_argument("--log", help="GPAW/optimizer text log")
    p.set_defaults(func=cmd_structure)

    p = sub.add_parser("displace", help="phonopy finite-difference displacements of the supercell")
    _add_config(p)
    p.add_argument("--structure", required=True, help="relaxed primitive cell (.extxyz)")
    p.add_argument("--out-dir", required=True, help="writes phonopy_disp.yaml, pristine.extxyz, fd_*.extxyz")
    p.set_defaults(func=cmd_displace)

    p = sub.add_parser("dft", help="GPAW LCAO SCF of one structure: energy, forces, E_F, H(R), S(R)",
                       description="Run GPAW (LCAO, PBE+D3) on one structure and write a frames file "
                                   "with energy, forces, Fermi level and the H(R), S(R) blocks.",
                       epilog="MPI: start it with `mpiexec -n N mlepi dft ...` or `srun -n N mlepi dft ...`; "
                              "GPAW then splits k points and the grid over the N ranks, and rank 0 writes "
                              "(docs/cluster.md).")
    p.add_argument("structure", help="structure file (.extxyz, one structure unless --index)")
    p.add_argument("--index", type=int, help="which structure of a file with several (0-based)")
    _add_config(p)
    p.add_argument("--out", required=True, help="frames file to write (.h5)")
    p.add_argument("--name", help="frame name (default: the structure file's stem)")
    p.add_argument("--log", help="GPAW text log")
    p.add_argument("--tile-to", metavar="SUPERCELL",
                   help="undisplaced supercell (.extxyz) of the structure, which is then its primitive cell: "
                        "compute the primitive cell and write the supercell's frame, tiled from it")
    p.set_defaults(func=cmd_dft)

    p = sub.add_parser("phonons", help="force sets -> phonopy force constants -> phonon bands")
    _add_config(p)
    p.add_argument("--disp", required=True, help="phonopy_disp.yaml from `mlepi displace`")
    p.add_argument("--pristine", required=True, help="DFT frames file of the undisplaced supercell")
    p.add_argument("--fd", required=True, nargs="+", help="DFT frames files of fd_000, fd_001, ... in order")
    p.add_argument("--out-dir", required=True, help="writes FORCE_SETS, phonopy_params.yaml, band.yaml, plot")
    p.set_defaults(func=cmd_phonons)

    p = sub.add_parser("phonons_ml", help="the same finite differences with HedgeNet forces, vs DFT")
    _add_config(p)
    p.add_argument("model", help="trained model (model.pt)")
    p.add_argument("--disp", required=True, help="phonopy_disp.yaml from `mlepi displace`")
    p.add_argument("--pristine", required=True, help="undisplaced supercell (.extxyz) with its layer array")
    p.add_argument("--dft-phonons", required=True, help="phonopy_params.yaml of the DFT phonons stage")
    p.add_argument("--out-dir", required=True, help="writes band.yaml, phonons_ml_vs_dft.png, summary.json")
    p.set_defaults(func=cmd_phonons_ml)

    p = sub.add_parser("thermal", help="Monte Carlo thermal displacements at one temperature")
    _add_config(p)
    p.add_argument("--phonopy", required=True, help="phonopy_params.yaml with force constants")
    p.add_argument("--pristine", required=True, help="undisplaced supercell (.extxyz)")
    p.add_argument("--temperature", required=True, type=float, help="temperature (K)")
    p.add_argument("--purpose", required=True, choices=["train", "test", "infer", "candidates", "special"],
                   help="train, test (the test set, thermal.test_seed): one file per sample in OUT (a directory); "
                        "infer, candidates (active learning, with --round): all samples in OUT; special: the "
                        "Zacharias-Giustino special displacement in OUT")
    p.add_argument("--round", type=int, help="active-learning round of the candidates (its own random stream)")
    p.add_argument("--out", required=True, help="output directory (train, test) or .extxyz file (the others)")
    p.set_defaults(func=cmd_thermal)

    p = sub.add_parser("dataset", help="merge DFT frames files into one dataset (HDF5)")
    p.add_argument("--frames", required=True, nargs="+", help="DFT frames files (.h5)")
    p.add_argument("--out", required=True, help="dataset file (.h5)")
    p.add_argument("--extxyz", help="also export energies and forces as extended XYZ (MACE/NequIP)")
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser("train", help="train HedgeNet (run under torchrun for several GPUs/processes)")
    _add_config(p)
    p.add_argument("--dataset", required=True, help="dataset file from `mlepi dataset`")
    p.add_argument("--out-dir", required=True, help="writes model.pt, checkpoint.pt, metrics.csv")
    p.add_argument("--member", type=int, default=0,
                   help="committee member (train.committee): seed train.seed + MEMBER (default 0)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--init", metavar="MODEL",
                   help="start from this model.pt (an active-learning round): its weights, standardisation and "
                        "validation frames; active.epochs epochs at train.lr * active.lr_factor")
    p.set_defaults(func=cmd_train)

    for name, help_text in (("infer", "HedgeNet predictions for many structures (thermal samples)"),
                            ("predict", "HedgeNet prediction for a structure of your own")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model", nargs="+",
                       help="trained model (model.pt); several: a committee (train.committee), whose mean, members "
                            "and spread the frames hold")
        p.add_argument("structures", help="structure file (.extxyz, one or more structures)")
        p.add_argument("--out", required=True, help="frames file to write (.h5)")
        p.add_argument("--overlap", choices=["gpaw", "model"], default="gpaw",
                       help="S from GPAW's basis integrals (exact, default) or from the model's S head")
        p.add_argument("--dtype", choices=["model", "float32", "float64"], default="model",
                       help="precision of the network: the one it was trained in (default), or as given")
        p.add_argument("--device", default="auto",
                       help="auto (default: the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N")
        p.add_argument("--workers", type=int, default=1,
                       help="processes for GPAW's exact S and the Fermi level of each structure (default 1)")
        p.set_defaults(func=cmd_infer)

    p = sub.add_parser("linearize", help="first-order EPI part of predicted H: H(0) + (dH/du).u by autograd",
                       description="For every frame of an `mlepi infer` output, the same frame with H replaced "
                                   "by its linearization around the pristine supercell (S kept exact): the "
                                   "input of the band analysis of first-order electron-phonon interactions "
                                   "(mlepi.ml.linearize, docs/bands.md).")
    p.add_argument("model", nargs="+", help="trained model (model.pt) that predicted the frames, or the "
                   "committee's models, as given to infer")
    p.add_argument("frames", help="frames file of `mlepi infer` (.h5), positions as the thermal stage wrote them")
    p.add_argument("--pristine", required=True, help="undisplaced supercell (.extxyz) the samples came from")
    p.add_argument("--out", required=True, help="frames file to write (.h5)")
    p.set_defaults(func=cmd_linearize)

    p = sub.add_parser("parity", help="HedgeNet vs DFT on the held-out dataset frames (forces, H)")
    p.add_argument("model", help="trained model (model.pt)")
    p.add_argument("dataset", help="dataset file the model was trained on (.h5)")
    p.add_argument("--primitive", help="primitive cell (.extxyz) from `mlepi structure`: also draw the unfolded "
                                       "band structure, DFT vs HedgeNet")
    p.add_argument("--out-dir", required=True, help="writes parity.json, parity.png (and bands_ml_vs_dft.png)")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("bands", help="unfold near K, thermal averages, SWMcC fit, v_F(T), figures")
    _add_config(p)
    p.add_argument("--primitive", required=True, help="primitive cell (.extxyz) from `mlepi structure`")
    p.add_argument("--supercell", required=True, help="undisplaced supercell (.extxyz), atom order of the frames")
    p.add_argument("--frames", required=True, nargs="+",
                   help="frames files (.h5) of the thermal samples; each frame records its temperature "
                        "(info temperature_K), and there is one analysis per temperature found")
    p.add_argument("--reference", help="DFT frames file of the pristine supercell: its Fermi level centres the "
                                       "band window (robust against a model's spurious states)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes that unfold samples, then fit temperatures, in parallel (default 1)")
    p.add_argument("--out-dir", required=True, help="writes vf.csv, bands.json, spectral.h5 and figures")
    p.set_defaults(func=cmd_bands)

    p = sub.add_parser("select", help="active learning: rank committee-inferred candidates by the committee's spread",
                       description="Ranks thermal candidates that a committee predicted (mlepi infer with several "
                                   "models) by the members' spread of the band energies at K and of the forces; "
                                   "writes the best as a structure file for GPAW (mlepi.ml.active).")
    _add_config(p)
    p.add_argument("--frames", required=True, nargs="+", help="frames files of `mlepi infer` with a committee")
    p.add_argument("--primitive", required=True, help="primitive cell (.extxyz) from `mlepi structure`")
    p.add_argument("--supercell", required=True, help="undisplaced supercell (.extxyz), atom order of the frames")
    p.add_argument("--reference", help="DFT frames file of the pristine supercell: its Fermi level centres the "
                                       "band window, as in `mlepi bands`")
    p.add_argument("--per-round", type=int, required=True, help="how many candidates to select")
    p.add_argument("--round", type=int, help="the active-learning round, recorded in every selected structure")
    p.add_argument("--out", required=True, help="the selected structures (.extxyz), names sel_000, ...")
    p.add_argument("--scores", required=True, help="every candidate's spreads, score and rank (.csv)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("testset", help="a committee's errors on the test set, thermal DFT frames never trained on",
                       description="Forces, energy, H and band-energy errors at K of the committee's mean and of "
                                   "each member on the test set (thermal purpose test), beside the committee's "
                                   "spread; each member's static-lattice v_F against DFT; goals "
                                   "(mlepi.evaluation.testset).")
    _add_config(p)
    p.add_argument("models", nargs="+", help="the committee's model.pt files (one: a single model)")
    p.add_argument("--test-frames", required=True, nargs="+", help="DFT frames files of the test set (.h5)")
    p.add_argument("--dataset", required=True, help="the dataset the models were trained on (.h5)")
    p.add_argument("--primitive", help="primitive cell (.extxyz): also each member's static-lattice v_F")
    p.add_argument("--out", required=True, help="results (.json)")
    p.set_defaults(func=cmd_testset)

    p = sub.add_parser("learning", help="active learning: the test-set errors and spreads of every round (table, "
                                        "figure)")
    p.add_argument("testsets", nargs="+", help="testset.json of rounds 0, 1, ... in order")
    p.add_argument("--out-csv", required=True, help="one row per round (.csv)")
    p.add_argument("--out-png", required=True, help="the figure (.png)")
    p.set_defaults(func=cmd_learning)

    p = sub.add_parser("renormalization", help="second-order share of the band renormalization; static and "
                                               "special-displacement points; DFT cross-check at K",
                       description="Compare the band analyses of the full and the linearized HedgeNet H, add the "
                                   "static lattice (HedgeNet, DFT), the special displacements and GPAW on some "
                                   "inferred samples (mlepi.electrons.renormalization, docs/bands.md).")
    _add_config(p)
    p.add_argument("--primitive", required=True, help="primitive cell (.extxyz) from `mlepi structure`")
    p.add_argument("--supercell", required=True, help="undisplaced supercell (.extxyz), atom order of the frames")
    p.add_argument("--bands", required=True, help="bands.json of `mlepi bands` on the full HedgeNet frames")
    p.add_argument("--bands-linear", required=True, help="bands.json of `mlepi bands` on the linearized frames")
    p.add_argument("--static-ml", required=True, help="HedgeNet frames file of the pristine supercell")
    p.add_argument("--static-dft", required=True, help="DFT frames file of the pristine supercell")
    p.add_argument("--special", nargs="*", default=[], help="HedgeNet frames files of the special displacements")
    p.add_argument("--check-dft", nargs="*", default=[], help="DFT frames files of inferred samples")
    p.add_argument("--infer", nargs="*", default=[], help="HedgeNet frames files those samples come from")
    p.add_argument("--supercells", help="convergence.csv of `mlepi supercell_convergence`: the supercell's part of "
                                        "the error budget (without it the total error is unknown)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes analysing the single structures in parallel (default 1)")
    p.add_argument("--out-dir", required=True, help="writes renormalization.csv/.json, crosscheck.csv, figures")
    p.set_defaults(func=cmd_renormalization)

    p = sub.add_parser("supercell_bands", help="HedgeNet thermal samples of an n x n supercell and their band analysis",
                       description="Force constants of the n x n supercell interpolated from the DFT phonons, "
                                   "thermal samples, HedgeNet H with GPAW's exact S, and the band analysis of "
                                   "`mlepi bands` (mlepi.ml.supercell_bands, docs/bands.md).")
    _add_config(p)
    p.add_argument("model", nargs="+", help="trained model (model.pt), or every member of a committee: their "
                                            "mean H, as in the answer's inference")
    p.add_argument("--n", required=True, type=int, help="in-plane size of the n x n supercell")
    p.add_argument("--phonopy", required=True, help="phonopy_params.yaml of the DFT phonons stage")
    p.add_argument("--primitive", required=True, help="primitive cell (.extxyz) from `mlepi structure`")
    p.add_argument("--reference", required=True, help="DFT frames file of the pristine supercell (band window)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes that unfold samples, then fit temperatures, in parallel (default 1)")
    p.add_argument("--out-dir", required=True, help="writes pristine.extxyz, T<T>.h5 and the band analysis")
    p.set_defaults(func=cmd_supercell_bands)

    p = sub.add_parser("supercell_convergence", help="v_F and K energies against supercell size (table, figure)")
    p.add_argument("--sizes", required=True, nargs="+", type=int, help="n of each n x n analysis")
    p.add_argument("--bands", required=True, nargs="+", help="bands.json of each, same order")
    p.add_argument("--phonopy", help="phonopy_params.yaml of the DFT phonons: mean-square displacements (and their "
                                     "flexural part) of each size's samples in the table")
    p.add_argument("--tolerance-THz", type=float, default=0.3,
                   help="modes below this frequency are left out, as by the sampler (thermal.imaginary_tolerance_THz)")
    p.add_argument("--force-constants", choices=["finite_difference", "invariant"], default="finite_difference",
                   help="the sampler's force constants (thermal.force_constants)")
    p.add_argument("--out-dir", required=True, help="writes convergence.csv and convergence.png")
    p.set_defaults(func=cmd_supercell_convergence)

    p = sub.add_parser("peers", help="HedgeNet against MACE on the same frames: forces, phonons, time (benchmark)",
                       description="Trains MACE (mace_run_train, config section peers) on HedgeNet's training "
                                   "frames and compares both on its validation frames, on test frames, on "
                                   "phonons against DFT and on time per structure (mlepi.evaluation.peers).")
    _add_peer_inputs(p, "writes peers.json, peers_phonons.png, mace/")
    p.add_argument("--disp", required=True, help="phonopy_disp.yaml from `mlepi displace`")
    p.add_argument("--pristine", required=True, help="undisplaced supercell (.extxyz) with its layer array")
    p.add_argument("--dft-phonons", required=True, help="phonopy_params.yaml of the DFT phonons stage")
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("peers_h", help="HedgeNet's H against an e3nn baseline of DeepH-E3's design (benchmark)",
                       description="Exports the dataset as DeepH folders (export-deeph), trains an equivariant "
                                   "Hamiltonian model of DeepH-E3's design (e3nn; config keys peers.h_*) on "
                                   "HedgeNet's training frames and compares both on H, eigenvalues near E_F, "
                                   "static v_F and time (mlepi.evaluation.peers_h).")
    _add_peer_inputs(p, "writes hamiltonian.json, hamiltonian_bands.png, deeph/, e3h/")
    p.add_argument("--primitive", required=True, help="primitive cell (.extxyz) for the static-lattice v_F")
    p.set_defaults(func=cmd_peers_h)

    p = sub.add_parser("accuracy", help="held-out errors of a model (and of its ablation) against DFT (benchmark)",
                       description="H (intra/inter), force and eigenvalue errors on the model's validation "
                                   "frames, phonon frequency errors, the one-edge-type ablation, learning "
                                   "curves (mlepi.evaluation.accuracy).")
    p.add_argument("model", help="trained model (model.pt); its metrics.csv beside it gives the learning curve")
    p.add_argument("dataset", help="the dataset it was trained on (.h5)")
    p.add_argument("--ablation", help="model.pt of the same training with model.heterogeneous: false")
    p.add_argument("--phonons-ml", help="summary.json of the phonons_ml stage")
    p.add_argument("--ablation-phonons-ml", help="summary.json of `mlepi phonons_ml` on the --ablation model")
    p.add_argument("--test-frames", nargs="+", default=(), metavar="H5",
                   help="DFT frames files never trained on (e.g. results/<system>/dft/check_*.h5): the same "
                        "errors on their frames, under 'test'")
    p.add_argument("--primitive", help="primitive cell (.extxyz): also the static-lattice v_F of the dataset's "
                                       "'pristine' frame, HedgeNet against DFT (band analysis of the config's "
                                       "bands section)")
    _add_config(p)
    p.add_argument("--out", required=True, help="results (.json); the learning curves go beside it (.png)")
    p.set_defaults(func=cmd_accuracy)

    p = sub.add_parser("export-deeph", help="frames with H and S (dataset, DFT or model frames) in the DeepH layout",
                       description="Write one DeepH-pack folder per frame (lat.dat, site_positions.dat, "
                                   "element.dat, orbital_types.dat, info.json, hamiltonians.h5, overlaps.h5), "
                                   "orbitals in DeepH's order (docs/data.md).")
    p.add_argument("frames", help="frames file (.h5), e.g. results/<system>/dataset/dataset.h5")
    p.add_argument("--out-dir", required=True, help="one folder per frame, named after it")
    p.set_defaults(func=cmd_export_deeph)

    p = sub.add_parser("inspect", help="print the provenance of mlepi outputs (versions, git revision, config "
                                       "hash, command, seed)")
    p.add_argument("files", nargs="+", help=".h5, .extxyz, model .pt or .json files written by mlepi")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("performance", help="time HedgeNet against GPAW and against system size (benchmark)",
                       description="HedgeNet inference (forces and H) against GPAW on the same displaced "
                                   "supercell, inference time and memory from 10^2 to 10^4 atoms, and the "
                                   "sparse shift-invert eigensolver against dense (docs/performance.md).")
    p.add_argument("model", help="trained model (model.pt); GPAW runs with the DFT settings it was trained on")
    p.add_argument("--primitive", required=True, help="relaxed primitive cell (.extxyz) from `mlepi structure`")
    p.add_argument("--pristine", required=True, help="DFT frames file of the pristine supercell (band stage)")
    _add_config(p)
    p.add_argument("--workflow", help="workflow.json of benchmarks/workflow.py to merge in")
    p.add_argument("--out", required=True, help="results (.json)")
    p.add_argument("--figure", required=True, help="figure (.png)")
    p.set_defaults(func=cmd_performance)

    p = sub.add_parser("compare", help="errors of frame B against reference frame A (H, forces, eigenvalues)")
    p.add_argument("a", help="reference frames file (e.g. DFT)")
    p.add_argument("b", help="frames file to test (e.g. HedgeNet)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mpi.prepare()  # before anything imports GPAW (ase.io does): `mpiexec -n N mlepi dft` needs it
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level if mpi.launched_rank() == 0 else logging.WARNING,  # one log, not N
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args.func(importlib.import_module(STAGE_MODULES[args.command]), args)
    except (MlepiError, FileNotFoundError) as err:
        print(f"mlepi {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
