"""Stage ``peers_h`` (``snakemake peers_h``, not in the default target): HedgeNet's H against an equivariant
Hamiltonian baseline of DeepH-E3's design (:mod:`mlepi.evaluation.e3_hamiltonian`) on the same frames.

The baseline trains on exactly HedgeNet's training frames (the dataset less the model's ``validation_frames``),
read from the DeepH folders that ``mlepi export-deeph`` writes of them (``out_dir/deeph/<frame>/``, the layout
DeepH-E3 reads), and keeps the epoch of lowest H error on HedgeNet's validation frames. Both models are then
compared, in one process, on

- the validation frames and the **test frames** (thermal DFT frames neither trained on, e.g. the band
  analysis' cross-check samples ``dft/check_*.h5``): H MAE overall, intra- and inter-layer and the largest
  errors (:func:`mlepi.evaluation.parity.h_errors`), eigenvalue MAE at Γ, K and M within ±1 eV of E_F, plain
  and aligned (:func:`mlepi.evaluation.accuracy.eigenvalue_errors`), both with DFT's S;
- the static-lattice v_F of the pristine supercell against DFT's (:func:`mlepi.evaluation.accuracy.static_vf`);
- the wall time of the H blocks of one structure.

Outputs in ``out_dir``: ``hamiltonian.json``, ``hamiltonian_bands.png`` (unfolded bands of a test frame, DFT
against each model) and ``e3h/`` (``checkpoint.pt`` after every epoch, so a killed training resumes, and
``metrics.csv``).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mlepi import figures
from mlepi.config import stage_config
from mlepi.config.bands import BandsConfig
from mlepi.electrons.bands import BandsError
from mlepi.evaluation import accuracy
from mlepi.evaluation.e3_hamiltonian import E3Hamiltonian, hermitian, reverse_index
from mlepi.evaluation.parity import band_structures, h_errors
from mlepi.formats import deeph, provenance
from mlepi.formats.frames import Frame, FramesFile
from mlepi.formats.structures import read_structure
from mlepi.formats.torch_files import read_torch_file
from mlepi.ml.infer import predict_frames
from mlepi.ml.model import HedgeNet

log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = "mlepi.peers_h_checkpoint"
FINAL_LR_FRACTION = 0.05  # the cosine schedule ends at this fraction of peers.h_lr
TIMING_REPEATS = 5
H_KEYS = ("h_mae_meV", "h_mae_intra_meV", "h_mae_inter_meV", "h_max_err_intra_meV", "h_max_err_inter_meV",
          "eig_mae_meV", "eig_mae_meV_by_point", "eig_mae_aligned_meV", "eig_mae_aligned_meV_by_point")


def orbital_types(basis: dict) -> dict[int, list[int]]:
    return {int(z): [int(l) for _, l in orbs] for z, orbs in basis["orbitals"].items()}


def sample(numbers, positions, cell, edge_index, cell_shift, H=None) -> dict:
    """The model's inputs (and target H, eV, GPAW order, padded) of one structure as tensors."""
    out = {"numbers": torch.as_tensor(np.asarray(numbers), dtype=torch.long),
           "positions": torch.as_tensor(np.asarray(positions), dtype=torch.float32),
           "cell": torch.as_tensor(np.asarray(cell), dtype=torch.float32),
           "edge_index": torch.as_tensor(np.asarray(edge_index), dtype=torch.long),
           "cell_shift": torch.as_tensor(np.asarray(cell_shift), dtype=torch.long),
           "reverse": torch.as_tensor(reverse_index(edge_index, cell_shift))}
    if H is not None:
        out["H"] = torch.as_tensor(np.asarray(H), dtype=torch.float32)
    return out


def read_deeph_sample(folder, basis: dict) -> dict:
    """A DeepH folder (``mlepi export-deeph``) as a training sample, its blocks back in GPAW's order."""
    structure, blocks = deeph.read(folder)
    types = orbital_types(basis)
    n_orb = max(sum(2 * l + 1 for l in ls) for ls in types.values())
    numbers = structure["numbers"]
    H = np.zeros((len(blocks), n_orb, n_orb))
    for e, (i, j, _, h, _) in enumerate(blocks):
        H[e, :h.shape[0], :h.shape[1]] = deeph.to_gpaw_order(h, types[int(numbers[i])], types[int(numbers[j])])
    edge_index = np.array([[b[0] for b in blocks], [b[1] for b in blocks]])
    cell_shift = np.array([b[2] for b in blocks])
    return sample(numbers, structure["positions"], structure["cell"], edge_index, cell_shift, H)


def frame_sample(frame: Frame) -> dict:
    return sample(frame.numbers, frame.positions, frame.cell, frame.edge_index, frame.cell_shift, frame.H)


def predict(model: E3Hamiltonian, s: dict) -> torch.Tensor:
    H = model(s["numbers"], s["positions"], s["cell"], s["edge_index"], s["cell_shift"])
    return hermitian(H, s["reverse"])


def entry_mask(model: E3Hamiltonian, s: dict) -> torch.Tensor:
    """[n_edges, n_orb, n_orb]: True on the entries of each block, False on its padding."""
    counts = torch.tensor([sum(2 * l + 1 for l in model.orbital_types[int(z)]) for z in model.species])
    n = counts[model.index_of_z[s["numbers"]]]
    i, j = s["edge_index"]
    rows = torch.arange(model.n_orb)
    return (rows[None, :, None] < n[i][:, None, None]) & (rows[None, None, :] < n[j][:, None, None])


def standardise(model: E3Hamiltonian, samples: list[dict]) -> None:
    """Output scale (the spread of the off-site training entries), the isotropic part of each species' mean
    on-site block (a constant that keeps the rotation covariance), and the mean neighbour count."""
    off, onsite, neighbours = [], {z: [] for z in model.species}, []
    for s in samples:
        i, j = s["edge_index"]
        is_onsite = (i == j) & (s["cell_shift"] == 0).all(dim=1)
        off.append(s["H"][~is_onsite][entry_mask(model, s)[~is_onsite]])
        for z in model.species:
            onsite[z].append(s["H"][is_onsite & (s["numbers"][i] == z)])
        neighbours.append((~is_onsite).sum() / len(s["numbers"]))
    model.scale.fill_(float(torch.cat(off).std()))
    model.norm.fill_(float(torch.stack(neighbours).mean()))
    for k, z in enumerate(model.species):
        mean = torch.cat(onsite[z]).mean(dim=0)
        start = 0
        for l in model.orbital_types[z]:  # the trace part of each diagonal shell block
            block = slice(start, start + 2 * l + 1)
            model.onsite_shift[k, block, block] = torch.eye(2 * l + 1) * mean[block, block].diagonal().mean()
            start += 2 * l + 1


def mae_meV(model: E3Hamiltonian, samples: list[dict]) -> float:
    with torch.no_grad():
        errors = [(predict(model, s) - s["H"]).abs()[entry_mask(model, s)] for s in samples]
    return 1e3 * float(torch.cat(errors).mean())


def train(samples: list[dict], validation: list[dict], basis: dict, cfg: dict, work_dir: Path) -> tuple:
    """Fit the baseline (MSE of the entries in units of the model's scale, Adam, cosine schedule); returns the
    model of the best validation epoch (the last without validation frames) and a summary. After every epoch
    ``work_dir/checkpoint.pt`` holds everything to resume; one of another config or data starts afresh."""
    torch.manual_seed(cfg["seed"])
    h_cfg = {k: v for k, v in cfg.items() if k.startswith("h_") or k == "seed"}
    model = E3Hamiltonian(orbital_types(basis), {int(z): r for z, r in basis["rcut"].items()}, h_cfg)
    standardise(model, samples)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["h_lr"])
    epochs = int(cfg["h_epochs"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=FINAL_LR_FRACTION * cfg["h_lr"])
    masks = [entry_mask(model, s) for s in samples]
    key = {"config": h_cfg, "n_train": len(samples), "n_validation": len(validation)}
    state = {"epoch": 0, "best": (math.inf, None, 0), "rows": [], "seconds": 0.0}
    path = work_dir / "checkpoint.pt"
    if path.is_file():
        saved = read_torch_file(path, CHECKPOINT_SCHEMA, "a checkpoint of the peers_h baseline")
        if saved["key"] == key:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            state = saved["state"]
            log.info("peers_h: resuming after epoch %d of %d", state["epoch"], epochs)
        else:
            log.info("peers_h: %s is of another config or data; training afresh", path)
    bar = tqdm(total=epochs, initial=state["epoch"], desc="peers_h", unit="epoch")
    for epoch in range(state["epoch"] + 1, epochs + 1):
        start = time.perf_counter()
        # One generator per epoch: a resumed run draws the order the uninterrupted one would have.
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch))
        model.train()
        losses = []
        for k in order.tolist():
            s, mask = samples[k], masks[k]
            loss = ((predict(model, s) - s["H"]) / model.scale)[mask].pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        schedule.step()
        model.eval()
        val = mae_meV(model, validation) if validation else float("nan")
        state["seconds"] += time.perf_counter() - start
        state["rows"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_h_mae_meV": val,
                              "lr": optimizer.param_groups[0]["lr"]})
        if not validation or val < state["best"][0]:
            state["best"] = (val, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        state["epoch"] = epoch
        with provenance.atomic_path(path) as tmp:
            torch.save({"schema": CHECKPOINT_SCHEMA, "key": key, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "state": state}, tmp)
        bar.update()
        bar.set_postfix(val_h_mae_meV=f"{val:.1f}")
    bar.close()
    with provenance.atomic_path(work_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(state["rows"][0]))
        writer.writeheader()
        writer.writerows(state["rows"])
    model.load_state_dict(state["best"][1])
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    return model, {"best_epoch": state["best"][2], "epochs": epochs, "train_s": state["seconds"],
                   "parameters": n_params, "settings": h_cfg}


def predicted_frame(model: E3Hamiltonian, frame: Frame) -> Frame:
    """The baseline's H on the DFT frame's own edges (no S, energy or forces)."""
    with torch.no_grad():
        H = predict(model, frame_sample(frame)).double().numpy()
    return Frame(name=frame.name, positions=frame.positions, cell=frame.cell, numbers=frame.numbers,
                 layer=frame.layer, pbc=frame.pbc, edge_index=frame.edge_index, cell_shift=frame.cell_shift, H=H)


def errors(dft_frames: list[Frame], predicted: list[Frame], basis: dict) -> dict:
    return {**h_errors(dft_frames, predicted, basis)[0],
            **accuracy.eigenvalue_errors(dft_frames, predicted, basis), "n_frames": len(dft_frames)}


def best_time(call, repeats: int = TIMING_REPEATS) -> float:
    """Best wall time (s) of ``call()`` over ``repeats`` after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(min(times))


def run(model_path, dataset_path, primitive, out_dir, config: dict | None = None, *, test_paths=()) -> dict:
    """Train the baseline on HedgeNet's training frames and compare both (module docstring); returns
    ``hamiltonian.json``. ``config``: config sections (:func:`mlepi.config.stage_config`); the stage reads
    ``peers`` (its ``h_*`` keys and ``seed``) and ``bands`` (the static-lattice v_F). ``test_paths``: frames
    files of the test frames (same DFT settings as the dataset)."""
    config = stage_config("peers_h", config)
    cfg, bands_cfg = config["peers"], BandsConfig.from_section(config["bands"])
    out_dir = Path(out_dir)
    (out_dir / "e3h").mkdir(parents=True, exist_ok=True)
    hedgenet = HedgeNet.load(model_path)
    dataset = FramesFile(dataset_path)
    tests = accuracy.read_test_frames(test_paths, dataset)
    primitive = read_structure(primitive)
    validation = list(hedgenet.metadata.get("validation_frames") or [])
    folders = {name: deeph.write_frame(dataset[name], dataset.basis, out_dir / "deeph" / name)
               for name in dataset.names}  # what `mlepi export-deeph` writes of the dataset
    samples = [read_deeph_sample(folders[n], dataset.basis) for n in dataset.names if n not in validation]
    log.info("peers_h: the baseline trains on %d frames, validates on %s", len(samples), validation)
    model, training = train(samples, [read_deeph_sample(folders[n], dataset.basis) for n in validation],
                            dataset.basis, cfg, out_dir / "e3h")

    sets = {"validation": [dataset[n] for n in validation], "test": tests}
    models = {"HedgeNet": {}, "E3 baseline": {}}
    for part, frames in sets.items():
        if not frames:
            continue
        result = accuracy.evaluate(model_path, dataset, frames)
        models["HedgeNet"][part] = {**{k: result[k] for k in H_KEYS}, "n_frames": len(frames)}
        models["E3 baseline"][part] = errors(frames, [predicted_frame(model, f) for f in frames], dataset.basis)
    models["HedgeNet"].update(accuracy.static_vf(model_path, dataset, primitive, bands_cfg))
    pristine = accuracy.pristine_frame(dataset)
    try:
        models["E3 baseline"].update(accuracy.static_vf_of(predicted_frame(model, pristine), dataset, primitive,
                                                           bands_cfg))
    except BandsError as err:  # its H may not give two bands in the window near K: say so, compare the rest
        models["E3 baseline"].update(vf_static_dft_1e6_m_s=models["HedgeNet"]["vf_static_dft_1e6_m_s"],
                                     vf_static_ml_1e6_m_s=None, vf_static_rel_err=None, vf_static_failed=str(err))
    probe = (tests or [pristine])[0]
    atoms, probe_sample = probe.to_atoms(), frame_sample(probe)
    models["HedgeNet"]["time_per_structure_s"] = best_time(lambda: predict_frames(
        hedgenet, [atoms], ["probe"], fermi_level=False, overlap="model"))
    with torch.no_grad():
        models["E3 baseline"]["time_per_structure_s"] = best_time(lambda: predict(model, probe_sample))
    for name, m in models.items():
        log.info("peers_h: %s: %s", name, m)

    shown = probe if tests else dataset[validation[0]] if validation else pristine
    hedgenet_frame = predict_frames(hedgenet, [shown.to_atoms()], [shown.name], fermi_level=False,
                                    overlap="model")[0]
    bands = {label: band_structures([(shown, ml)], dataset.basis, primitive, pristine)
             for label, ml in (("HedgeNet", hedgenet_frame), ("E3 baseline", predicted_frame(model, shown)))}
    joined = {**bands["HedgeNet"], "frames": [bands[label]["frames"][0] for label in bands]}
    figures.plot_band_structure(joined, out_dir / "hamiltonian_bands.png", held_out=[True] * len(bands),
                                model_names=list(bands))
    summary = {
        "models": models,
        "e3_over_hedgenet_time": (models["E3 baseline"]["time_per_structure_s"]
                                  / models["HedgeNet"]["time_per_structure_s"]),
        "baseline": {**training, "design": "DeepH-E3 (e3nn tensor products, mlepi.evaluation.e3_hamiltonian)",
                     "e3nn_version": version("e3nn")},
        "frames": {"train": len(samples), "validation": validation, "test": [f.name for f in tests],
                   "timed_structure": probe.name, "timed_structure_atoms": probe.n_atoms, "bands_frame": shown.name},
        "units": {"h_mae_meV": "meV", "eig_mae_meV": "meV, within eig_window_eV of E_F", "vf": "1e6 m/s",
                  "time_per_structure_s": "s, H blocks of one structure (HedgeNet: also its S, energy, forces)"},
        "eig_window_eV": accuracy.EIG_WINDOW_EV,
        "provenance": provenance.record(config, model=str(model_path), dataset=str(dataset_path),
                                        inputs=[str(p) for p in test_paths]),
    }
    provenance.write_json(out_dir / "hamiltonian.json", summary)
    return summary
