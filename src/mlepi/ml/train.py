"""Stage ``train``: fit HedgeNet to a dataset frames file (energies, forces, H and S blocks).

One public entry, :func:`run`. It works alone (one process, no process group) and under ``torchrun``
(``torchrun --standalone --nproc_per_node N -m mlepi.cli train ...``): with several processes, or one on a GPU,
it joins a ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs), wraps the model in
DistributedDataParallel and shards the training frames with a DistributedSampler, so one GPU runs the code path
of N. Only rank 0 writes files.

Outputs in ``out_dir``:

- ``model.pt``: the best model so far (lowest validation loss), written by :meth:`HedgeNet.save` with the DFT
  parameters of the dataset (``metadata['dft_parameters']``, used by ``mlepi infer`` for the Fermi level),
  the training config and a provenance record;
- ``metrics.csv``: one row per epoch (units in the column names, validation MAEs on the held-out split);
- ``checkpoint.pt``: everything needed to continue (weights, optimizer, scheduler, RNG state, epoch, early
  stopping state, best weights, metric history). Rewritten atomically every epoch; a run that finds it resumes
  after its last completed epoch and ends as an uninterrupted run would.

With ``init`` (an active-learning round, ``docs/active.md``) the training starts from another model's weights and
output standardisation instead of a fresh initialisation, keeps that model's validation frames (so that a frame
it trained on never becomes a validation frame of the next round) and trains every other frame, the new ones
included, for ``active.epochs`` epochs from ``train.lr × active.lr_factor``.

Loss: a weighted sum of mean squared errors, each divided by the variance of its target in the training split
(dimensionless, so the weights compare like with like): energy per atom, force components, H and S block
elements (only the real orbital pairs of the zero-padded blocks). A target enters only when every frame has it
and its weight is positive.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from mlepi.config import stage_config
from mlepi.formats.frames import FramesFile
from mlepi.formats.provenance import atomic_path, config_hash, record
from mlepi.formats.torch_files import read_torch_file, resolve_device
from mlepi.ml.ema import EMA
from mlepi.ml.graph import INTER, INTRA, frame_to_data
from mlepi.ml.model import DECAY_DEGREE, HedgeNet
from mlepi.ml.split import bootstrap_indices, kept_split, split_group, split_indices

log = logging.getLogger(__name__)

TARGETS = ("energy", "forces", "H", "S")
# Keys that may change between a run and its resumption without invalidating the checkpoint.
_RESUMABLE_KEYS = ("device",)
CHECKPOINT_SCHEMA = "mlepi.train_checkpoint"
# The config keys a training with --init reads beyond the train stage's (an active-learning round's).
ROUND_STAGE = "train_round"


# -------------------------------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def grouped(self) -> bool:
        """In a process group (torchrun, or a caller's own group): DDP, barriers and reductions apply."""
        return dist.is_initialized()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.grouped:
            values = values.to(self.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values.cpu()


def _setup_distributed(device: str) -> _Dist:
    """Join the torchrun process group (several processes, or one on a GPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device).type == "cuda"
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = False
    # One torchrun process on a GPU joins a group too, so that a single GPU runs the NCCL code path of N; on a
    # CPU it would only add a gloo all-reduce per step.
    launched = world > 1 or (use_cuda and "TORCHELASTIC_RUN_ID" in os.environ)
    if launched and not dist.is_initialized():
        if use_cuda:  # NCCL told its device: otherwise every barrier warns that it guesses one
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
        owns = True
        log.info("torch.distributed: %s backend, %d process(es), this one on %s", dist.get_backend(), world, dev)
    # From OMP_NUM_THREADS (the workflow sets resources.train_threads; torchrun, starting several processes
    # without it, gives each one thread).
    log.info("torch threads per process: %d", torch.get_num_threads())
    return _Dist(rank=rank, world=world, device=dev, owns_group=owns)


# ------------------------------------------------------------------------------------------------------- data
def _cast(graph, dtype: torch.dtype):
    for key, value in graph.items():
        if torch.is_tensor(value) and value.is_floating_point():
            graph[key] = value.to(dtype)
    return graph


def available_targets(frames, weights: dict) -> tuple[str, ...]:
    """Targets with a positive weight that every frame has."""
    return tuple(t for t in TARGETS
                 if weights.get(t, 0.0) > 0 and all(getattr(f, t) is not None for f in frames))


def kpoint_length(dft_parameters: dict, frames) -> list[float] | None:
    """k points x lattice length (Å) of the DFT mesh for the two in-plane lattice vectors, or None.

    ``mlepi dft`` uses ``kpts_primitive / multiple`` k points for a supercell of in-plane ``multiple`` (frame
    ``info['supercell']``), so ``kpts_primitive x |a_c| / multiple`` is the same for every supercell of one
    primitive cell: ``mlepi infer`` divides it by a structure's lattice lengths to get that structure's mesh.
    """
    kpts = dft_parameters.get("kpts_primitive")
    multiples = frames[0].info.get("supercell") if frames else None
    if kpts is None or multiples is None:
        return None
    lengths = np.linalg.norm(frames[0].cell, axis=1)
    return [float(kpts[c]) * float(lengths[c]) / float(multiples[c]) for c in range(2)]


def _onsite(graph) -> torch.Tensor:
    i, j = graph.block_edge_index
    return (i == j) & (graph.block_cell_shift == 0).all(dim=1)


def statistics(graphs, model: HedgeNet, targets) -> tuple[dict, dict]:
    """Output standardisation for the model and target scales for the loss, from training graphs.

    Returns
    -------
    model_stats : dict for :meth:`HedgeNet.set_standardisation`: E0 per species by least squares on the
        species counts (eV), energy scale = RMS force (eV/Å x 1 Å; a per-atom energy moves by about F x u),
        mean neighbours per atom (intra, inter, all), per-species mean on-site H and S blocks, RMS off-site H, S.
    loss_scales : dict target -> scale that makes the loss dimensionless: RMS force (eV/Å) for forces and for
        energy per atom (eV, x 1 Å), RMS of H and S about the per-species on-site means.
    """
    n_species = len(model.species)
    counts = np.array([np.bincount(model.species_index(g.numbers).numpy(), minlength=n_species) for g in graphs])
    n_atoms = counts.sum(1)
    stats, scales = {}, {}
    if "forces" in targets:
        f = torch.cat([g.forces.reshape(-1) for g in graphs]).double()
        scales["forces"] = max(float(f.pow(2).mean().sqrt()), 1e-3)
        stats["energy_scale"] = scales["forces"]
    if "energy" in targets:
        e = np.array([float(g.energy) for g in graphs])
        e0 = np.linalg.lstsq(counts.astype(float), e, rcond=None)[0]
        stats["energy_shift"] = e0
        resid_rms = max(float(np.sqrt(np.mean(((e - counts @ e0) / n_atoms) ** 2))), 1e-4)
        stats.setdefault("energy_scale", resid_rms)
        # Energy per atom is measured in units of the RMS force x 1 Å when forces are fitted: the spread of
        # per-atom energies among thermal samples (meV) would otherwise outweigh forces and H by orders of
        # magnitude, although it carries less information than the forces it integrates.
        scales["energy"] = scales.get("forces", resid_rms)
    kinds = np.array([[int((g.edge_type == INTRA).sum()), int((g.edge_type == INTER).sum())] for g in graphs])
    per_atom = kinds.sum(0) / n_atoms.sum()
    stats["avg_neighbors"] = np.maximum([per_atom[0], per_atom[1], per_atom.sum()], 1.0)
    for key in ("H", "S"):
        if key not in targets:
            continue
        mean = np.zeros((n_species, model.n_orb, model.n_orb))
        n_on = np.zeros(n_species)
        off_sq, off_n, res_sq, res_n = 0.0, 0, 0.0, 0
        for g in graphs:
            on = _onsite(g)
            sp = model.species_index(g.numbers)[g.block_edge_index[0, on]].numpy()
            np.add.at(mean, sp, g[key][on].double().numpy())
            np.add.at(n_on, sp, 1)
        mean /= np.maximum(n_on, 1)[:, None, None]
        for g in graphs:
            on = _onsite(g)
            mask = model.block_mask(g.numbers, g.block_edge_index)
            blocks = g[key].double().clone()
            sp = model.species_index(g.numbers)[g.block_edge_index[0, on]]
            blocks[on] -= torch.as_tensor(mean)[sp]
            off_sq += float(blocks[~on][mask[~on]].pow(2).sum())
            off_n += int(mask[~on].sum())
            res_sq += float(blocks[mask].pow(2).sum())
            res_n += int(mask.sum())
        stats[f"{key}_onsite_mean" if key == "H" else "S_onsite"] = mean
        stats[f"{key}_scale"] = max(math.sqrt(off_sq / max(off_n, 1)), 1e-6)
        scales[key] = max(math.sqrt(res_sq / max(res_n, 1)), 1e-6)
    if "H" in targets:
        stats["H_decay"], stats["H_decay_range"] = decay_fit(graphs, model, stats["H_scale"])
    return stats, scales


DECAY_FLOOR_EV = 1e-5  # block RMS below this counts as this (log of DFT's ~0 beyond the orbitals' reach)


def decay_fit(graphs, model: HedgeNet, h_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per edge kind of ``model``: coefficients (highest power first) of a polynomial of degree
    ``model.DECAY_DEGREE`` (lower with fewer distinct lengths) fitted by least squares to log(RMS / h_scale) of
    the off-site H blocks against bond length, and the range of lengths it was fitted on (Å). A kind without
    blocks keeps zeros (scale h_scale everywhere)."""
    lengths, logs, kind_of = [], [], []
    for g in graphs:
        off = ~_onsite(g)
        i, j = g.block_edge_index[:, off]
        vec = HedgeNet._bond_vectors(g.pos.double(), g.cell.double(), torch.zeros(len(g.pos), dtype=torch.long),
                                     (i, j), g.block_cell_shift[off])
        mask = model.block_mask(g.numbers, g.block_edge_index)[off]
        rms = (g.H[off].double().pow(2) * mask).sum((1, 2)).div(mask.sum((1, 2))).sqrt()
        lengths.append(vec.norm(dim=1).numpy())
        logs.append(np.log(np.maximum(rms.numpy(), DECAY_FLOOR_EV) / h_scale))
        kind_of.append((g.layer[i] != g.layer[j]).numpy() if model.kinds != ("shared",) else np.zeros(len(i), bool))
    r, y, inter = (np.concatenate(a) for a in (lengths, logs, kind_of))
    coef, span = np.zeros((len(model.kinds), DECAY_DEGREE + 1)), np.tile([0.0, 1e3], (len(model.kinds), 1))
    for k in range(len(model.kinds)):
        sel = inter == bool(k)
        degree = min(DECAY_DEGREE, len(np.unique(np.round(r[sel], 3))) - 1)
        if degree < 0:
            continue
        coef[k, DECAY_DEGREE - degree:] = np.polyfit(r[sel], y[sel], degree)
        span[k] = r[sel].min(), r[sel].max()
    return coef, span


def _uses_all_parameters(model: HedgeNet, graphs, targets) -> bool:
    """Whether every batch reaches every parameter (else DDP must search for unused ones each step).

    True when all four targets are fitted and every graph has message-passing and off-site block edges of
    each edge kind the model distinguishes.
    """
    if set(targets) != set(TARGETS):
        return False
    for g in graphs:
        i, j = g.block_edge_index
        off = ~_onsite(g)
        block_same = g.layer[i[off]] == g.layer[j[off]]
        for kind in model.kinds:
            has_mp = {"intra": (g.edge_type == INTRA).any(), "inter": (g.edge_type == INTER).any(),
                      "shared": g.edge_type.numel() > 0}[kind]
            has_block = {"intra": block_same.any(), "inter": (~block_same).any(), "shared": off.any()}[kind]
            if not (bool(has_mp) and bool(has_block)):
                return False
    return True


# ------------------------------------------------------------------------------------------------------- loss
def residuals(out: dict, batch, model: HedgeNet, targets) -> dict[str, torch.Tensor]:
    """Prediction minus target, flattened per target: energy per atom (eV), forces (eV/Å), H (eV), S."""
    res = {}
    if "energy" in targets:
        n_atoms = torch.bincount(batch.batch, minlength=len(batch.energy)).to(out["energy"].dtype)
        res["energy"] = (out["energy"] - batch.energy) / n_atoms
    if "forces" in targets:
        res["forces"] = (out["forces"] - batch.forces).reshape(-1)
    for key in ("H", "S"):
        if key in targets:
            res[key] = model.real_pairs(out[key] - batch[key], batch.numbers, batch.block_edge_index)
    return res


def weighted_loss(res: dict, weights: dict, scales: dict, counts: dict | None = None) -> torch.Tensor:
    """sum_k w_k sum(res_k^2) / n_k / scale_k^2 (dimensionless), n_k = ``counts[k]`` or, without counts, the
    number of residuals here (a plain mean)."""
    return sum(weights[k] * r.pow(2).sum() / (counts[k] if counts else r.numel()) / scales[k] ** 2
               for k, r in res.items())


def evaluate(model: HedgeNet, loader, targets, weights, scales, ctx: _Dist) -> dict:
    """Validation metrics over all ranks' shards: MAEs in meV/atom, meV/Å, meV, 1 and the weighted loss."""
    model.eval()
    sums = torch.zeros(len(TARGETS), 3, dtype=torch.float64)  # per target: sum |r|, sum r^2, count
    for batch in loader:
        batch = batch.to(ctx.device)
        with torch.no_grad():  # forces still come from autograd inside forward
            out = model(batch, forces="forces" in targets)
        res = residuals(out, batch, model, targets)
        for k, r in res.items():
            r = r.double().cpu()
            sums[TARGETS.index(k)] += torch.stack([r.abs().sum(), r.pow(2).sum(), torch.tensor(float(r.numel()))])
    sums = ctx.all_sum(sums)
    metrics, loss = {}, 0.0
    to_milli = {"energy": 1e3, "forces": 1e3, "H": 1e3, "S": 1.0}
    names = {"energy": "energy_mae_meV_per_atom", "forces": "forces_mae_meV_per_A", "H": "H_mae_meV",
             "S": "S_mae"}
    for k in TARGETS:
        abs_sum, sq_sum, n = sums[TARGETS.index(k)].tolist()
        metrics[names[k]] = abs_sum / n * to_milli[k] if (k in targets and n > 0) else float("nan")
        if k in targets and n > 0:
            loss += weights[k] * sq_sum / n / scales[k] ** 2
    metrics["loss"] = loss if sums[:, 2].sum() > 0 else float("nan")
    return metrics


# --------------------------------------------------------------------------------------------------- checkpoint
def content_hash(frames) -> str:
    """Hash of every frame's geometry and targets: a checkpoint resumes only on the very data it was trained on
    (recomputed DFT with other results, same names and config, is a new run)."""
    digest = hashlib.sha256()
    for frame in frames:
        for key in ("positions", "cell", "energy", "forces", "edge_index", "cell_shift", "H", "S"):
            value = getattr(frame, key)
            if value is not None:
                digest.update(key.encode())
                digest.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write the checkpoint under a temporary name and rename it: the old one stays until the new one exists."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    state = read_torch_file(path, CHECKPOINT_SCHEMA, "an mlepi training checkpoint (remove it, or train with "
                            "--restart, to start afresh)")
    if state["fingerprint"] != fingerprint:
        # A changed config, seed or dataset is a new run (Snakemake reran the rule): start afresh. The
        # old checkpoint is replaced only once the new run has written its first one.
        warnings.warn(f"{path}: checkpoint of a different config, seed, dataset or network (fingerprint "
                      f"{state['fingerprint']} != {fingerprint}); starting a new training run")
        return None
    return state


def _write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.csv from the full history (so it always agrees with the checkpoint)."""
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------- run
def member_seed(train_cfg: dict, member: int) -> int:
    """The seed of committee member ``member``: ``train.seed + member`` (member 0 is the single model)."""
    return int(train_cfg["seed"]) + int(member)


def run(dataset_path, out_dir, config: dict | None = None, *, member: int = 0, seed: int | None = None,
        resume: bool = True, init=None) -> dict:
    """Train HedgeNet on a dataset frames file; resume from ``out_dir/checkpoint.pt`` if it exists.

    Parameters
    ----------
    dataset_path : path of the dataset frames file (``mlepi dataset``).
    out_dir : directory for ``model.pt``, ``metrics.csv`` and ``checkpoint.pt`` (created).
    config : config sections (:func:`mlepi.config.stage_config`): the stage reads the ``model`` and ``train``
        sections; missing keys take the defaults, unknown keys are an error.
    member : index of this committee member (``train.committee``): its seed is :func:`member_seed`.
    seed : seed of the split, the bootstrap, initial weights and shuffling; ``None`` takes the member's.
    resume : continue from ``out_dir/checkpoint.pt`` when it exists (it must come from the same config, seed
        and dataset); False starts afresh and overwrites it.
    init : model.pt to start from (module docstring); the stage then also reads the ``active`` section's
        ``epochs`` and ``lr_factor`` (stage ``train_round``, :data:`ROUND_STAGE`).

    Returns
    -------
    dict with the best epoch, its validation metrics and the number of epochs run.
    """
    given = config
    config = stage_config("train", config)
    model_cfg, train_cfg = config["model"], config["train"]
    seed = member_seed(train_cfg, member) if seed is None else int(seed)
    start_model = None
    if init is not None:
        start_model = _start_model(init, model_cfg)
        active = stage_config(ROUND_STAGE, given)["active"]
        train_cfg = {**train_cfg, "epochs": active["epochs"], "lr": train_cfg["lr"] * active["lr_factor"]}
    out_dir = Path(out_dir)
    ctx = _setup_distributed(train_cfg["device"])
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if ctx.device.type == "cpu":
        # With more than one thread, the CPU's parallel accumulation (the backward of the gathers) sums in a
        # varying order: float32 forces differed at 1e-7 from run to run, and a resumed training would not be
        # the uninterrupted one. The deterministic kernels cost ~5 % of the default workflow's training
        # (benchmarks/NOTES.md section 18).
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings():
            # DDP warns about grad strides of [1, n] weights after double backward; a size-1 dim has no layout.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            return _train(Path(dataset_path), model_cfg, train_cfg, out_dir, seed, member, ctx, resume,
                          start_model, None if init is None else str(init))
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        if ctx.owns_group:
            dist.destroy_process_group()


def _start_model(path, model_cfg: dict) -> HedgeNet:
    """The model an active-learning round starts from, checked to have the configured architecture."""
    model = HedgeNet.load(path)
    if model.config != model_cfg:
        changed = sorted(k for k in set(model.config) | set(model_cfg) if model.config.get(k) != model_cfg.get(k))
        raise ValueError(f"{path}: its model section differs from the config's in {changed}; a round trains on "
                         "from the previous round's weights, so the architecture cannot change between rounds")
    if not model.metadata.get("validation_frames") and model.metadata.get("train_config", {}).get("val_fraction"):
        raise ValueError(f"{path}: records no validation frames to keep; retrain it with this mlepi")
    return model


def file_hash(path) -> str:
    """A checkpoint of a round resumes only from the very model the round started from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _train(dataset_path: Path, model_cfg: dict, train_cfg: dict, out_dir: Path, seed: int, member: int,
           ctx: _Dist, resume: bool, start_model: HedgeNet | None = None, init: str | None = None) -> dict:
    dtype = {"float32": torch.float32, "float64": torch.float64}[train_cfg["dtype"]]
    weights = train_cfg["weights"]
    dataset = FramesFile(dataset_path)
    frames = list(dataset)
    targets = available_targets(frames, weights)
    if not targets:
        raise ValueError(f"{dataset_path}: no frame set has energy, forces, H or S with a positive weight")
    graphs = [_cast(frame_to_data(f, dataset.basis, model_cfg["cutoff_intra"], model_cfg["cutoff_inter"]), dtype)
              for f in frames]
    groups = [split_group(f) for f in frames]
    if start_model is None:
        train_idx, val_idx = split_indices(groups, train_cfg["val_fraction"], seed)
    else:
        train_idx, val_idx = kept_split([f.name for f in frames],
                                        start_model.metadata.get("validation_frames") or [], dataset_path)
    if train_cfg["bootstrap"]:
        train_idx = bootstrap_indices(groups, train_idx, seed)
    train_graphs = [graphs[k] for k in train_idx]
    val_graphs = [graphs[k] for k in val_idx]

    torch.manual_seed(seed)
    model = HedgeNet.from_config(model_cfg, dataset.basis).to(dtype)
    model_stats, scales = statistics(train_graphs, model, targets)
    model.set_standardisation(model_stats)
    if start_model is not None:  # its weights and standardisation: the round trains on from them
        model.load_state_dict(start_model.state_dict())
    model.to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(train_cfg["epochs"], 1), eta_min=train_cfg["lr"] * train_cfg["lr_min_factor"])
    ema = EMA(model, train_cfg["ema_decay"]) if train_cfg["ema_decay"] > 0 else None

    fingerprint = config_hash({
        "model": model_cfg, "train": {k: v for k, v in train_cfg.items() if k not in _RESUMABLE_KEYS},
        "seed": seed, "frames": dataset.names, "dataset_content": content_hash(frames),
        "init": None if init is None else file_hash(init),
        # the network's layout: a checkpoint of another mlepi version's HedgeNet is a new run, not a resume
        "parameters": {k: list(v.shape) for k, v in model.state_dict().items()}})
    ckpt_path, model_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "model.pt", out_dir / "metrics.csv"
    state = _load_checkpoint(ckpt_path, fingerprint) if resume else None
    history, best_loss, best_epoch, bad_epochs, best_state, start, stopped = [], math.inf, 0, 0, None, 1, False
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        history, best_loss, best_epoch = state["history"], state["best_loss"], state["best_epoch"]
        bad_epochs, best_state, stopped = state["bad_epochs"], state["best_state"], state["stopped"]
        start = state["epoch"] + 1
    if ctx.grouped:
        dist.barrier()  # every rank has read the checkpoint before rank 0 may overwrite it
    net = model
    if ctx.grouped:
        net = DistributedDataParallel(model, find_unused_parameters=not _uses_all_parameters(model, train_graphs,
                                                                                              targets))

    sampler = DistributedSampler(train_graphs, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
    train_loader = DataLoader(train_graphs, batch_size=train_cfg["batch_size"], sampler=sampler)
    val_loader = DataLoader(val_graphs[ctx.rank::ctx.world], batch_size=train_cfg["batch_size"])
    metadata = {"dft_parameters": dataset.parameters, "kpoint_length": kpoint_length(dataset.parameters, frames),
                "dataset": str(dataset_path),
                "dataset_provenance": dataset.provenance, "train_config": train_cfg, "targets": list(targets),
                "validation_frames": [frames[i].name for i in val_idx],
                "training_frames": [frames[i].name for i in train_idx], "member": member, "seed": seed,
                "init_model": init,
                "provenance": record({"model": model_cfg, "train": train_cfg}, seed=seed) if ctx.main else {}}
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    bar = tqdm(total=train_cfg["epochs"], initial=start - 1, desc="train", unit="epoch", disable=not ctx.main,
               file=sys.stderr, dynamic_ncols=True)
    for epoch in range(start, train_cfg["epochs"] + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_loss = _train_epoch(net, model, train_loader, optimizer, targets, weights, scales, train_cfg, ctx, ema)
        scheduler.step()
        with ema.applied(model) if ema is not None else contextlib.nullcontext():  # what model.pt would hold
            metrics = evaluate(model, val_loader, targets, weights, scales, ctx) if val_graphs else {}
            monitored = metrics.get("loss", train_loss)
            if monitored < best_loss:
                best_loss, best_epoch, bad_epochs = monitored, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if ctx.main:
                    model.save(model_path, **metadata, epoch=epoch, val_loss=monitored)
            else:
                bad_epochs += 1
        stopped = bad_epochs >= train_cfg["patience"]
        history.append({"epoch": epoch, "lr": lr, "train_loss": train_loss,
                        **{f"val_{k}": v for k, v in metrics.items()},
                        "epoch_time_s": time.perf_counter() - t0})
        if ctx.main:
            _write_metrics(metrics_path, history)
            _save_checkpoint(ckpt_path, {
                "schema": CHECKPOINT_SCHEMA, "fingerprint": fingerprint, "epoch": epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_state(), "history": history,
                "ema": None if ema is None else ema.state_dict(),
                "best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                "best_state": best_state, "stopped": stopped, "config": {"model": model_cfg, "train": train_cfg},
                "seed": seed})
        bar.update(1)
        bar.set_postfix(loss=f"{monitored:.3g}", E=f"{metrics.get('energy_mae_meV_per_atom', math.nan):.3g}",
                        F=f"{metrics.get('forces_mae_meV_per_A', math.nan):.3g}",
                        H=f"{metrics.get('H_mae_meV', math.nan):.3g}")
    bar.close()

    if ctx.main and best_state is not None:
        # The final model.pt is the best epoch's weights, also after a resume that found training finished.
        model.load_state_dict(best_state)
        model.save(model_path, **metadata, epoch=best_epoch, val_loss=best_loss)
        _write_metrics(metrics_path, history)
    if ctx.grouped:
        dist.barrier()
    best = next((row for row in history if row["epoch"] == best_epoch), {})
    return {"best_epoch": best_epoch, "epochs_run": len(history), "stopped_early": stopped, "best": best}


def _train_epoch(net, model, loader, optimizer, targets, weights, scales, cfg, ctx, ema=None) -> float:
    """One pass over this rank's shard (the weights' moving average ``ema`` updated after every step); returns the
    mean training loss over all ranks."""
    model.train()
    need_forces = "forces" in targets
    total = torch.zeros(2, dtype=torch.float64)
    for batch in loader:
        batch = batch.to(ctx.device)
        out = net(batch, forces=need_forces, create_graph=need_forces)
        res = residuals(out, batch, model, targets)
        # Normalise by the residual count of the whole global batch (over the world size, since DDP averages
        # gradients): then a step on W ranks is the step on one rank with the whole batch, even when the
        # ranks' shards hold different numbers of atoms or blocks.
        counts = ctx.all_sum(torch.tensor([float(r.numel()) for r in res.values()], dtype=torch.float64))
        loss = weighted_loss(res, weights, scales, {k: float(n) / ctx.world for k, n in zip(res, counts)})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        if ema is not None:
            ema.update(model)
        total += torch.tensor([float(loss.detach()), 1.0], dtype=torch.float64)
    total = ctx.all_sum(total)
    return float(total[0] / max(float(total[1]), 1.0))
