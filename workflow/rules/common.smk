# Shared helpers of the workflow: config validation (once, at parse time), paths, per-stage params.
import json

from mlepi import config as mlepi_config
from mlepi.dft import mpi as mlepi_mpi


# Fills defaults and rejects unknown or repeated keys and bad values, naming the field and file, before any
# job starts (schema: src/mlepi/config/config.schema.yaml).
mlepi_config.validate_workflow(config, workflow.configfiles)

OUT = f"results/{config['system']['name']}"
TEMPERATURES = [f"{t:g}" for t in config["thermal"]["temperatures"]]
N_TRAIN = config["thermal"]["train_samples"]
N_CHECK = config["bands"]["dft_check_samples"]
N_MEMBERS = config["train"]["committee"]
N_ROUNDS = config["active"]["rounds"]
N_TEST = config["thermal"]["test_samples"]
# Active-learning candidates and the test set are also drawn beyond the answer's temperatures: at
# active.max_temperature_factor times the highest (a wider distribution than the training set's).
_T_MAX = max(config["thermal"]["temperatures"]) * config["active"]["max_temperature_factor"]
WIDE_TEMPERATURES = list(dict.fromkeys(TEMPERATURES + ([f"{_T_MAX:g}"] if _T_MAX > 0 else [])))

# A DFT job: dft_ranks MPI ranks of dft_threads BLAS threads each. With one rank it is a plain process; with
# several, an MPI job: the SLURM plugin then submits --ntasks ranks and runs the rule's own launcher inside
# the batch script (resolved here, where this file is parsed: inside the job under SLURM).
DFT_RANKS = config["resources"]["dft_ranks"]
DFT_THREADS = config["resources"]["dft_threads"]
if DFT_RANKS > 1:
    DFT_LAUNCH = mlepi_mpi.launcher_command(config["resources"]["mpi_launcher"], DFT_RANKS, DFT_THREADS) + " "
    DFT_MPI = {"mpi": DFT_LAUNCH.strip()}
else:
    DFT_LAUNCH, DFT_MPI = "", {}


def stage_params(*stages):
    """The config keys the stages read (the schema's x-stages): a change of any other key does not rerun them."""
    return mlepi_config.stage_params(config, *stages)


def displace_dir():
    return checkpoints.displace.get().output[0]


def fd_names(wildcards=None):
    """Names of phonopy's displaced supercells, known once the displace checkpoint has run."""
    directory = displace_dir()
    return sorted(p[:-len(".extxyz")] for p in os.listdir(directory) if p.startswith("fd_"))


def thermal_train_names():
    return [f"mc_T{T}_s{k:03d}" for T in TEMPERATURES for k in range(N_TRAIN)]


def test_names():
    """The test set: thermal.test_samples DFT frames per temperature, never trained on (docs/active.md)."""
    return [f"test_T{T}_s{k:03d}" for T in WIDE_TEMPERATURES for k in range(N_TEST)]


def check_names():
    """DFT cross-check of the band analysis: the first inferred samples of each temperature."""
    return [f"check_T{T}_s{k:03d}" for T in TEMPERATURES for k in range(N_CHECK)]


def dft_frames(wildcards=None):
    """Every DFT configuration the training set holds: pristine, finite differences, thermal samples."""
    names = ["pristine"] + fd_names() + thermal_train_names()
    return [f"{OUT}/dft/{name}.h5" for name in names]


def round_dir(k):
    """Active-learning round k's data, models and metrics (round 0: the first training, in train/)."""
    return f"{OUT}/active/round_{k}"


def round_model(k, member):
    """model.pt of committee member ``member`` (train.committee; seed train.seed + member) after round k."""
    return f"{OUT}/train/member_{member}/model.pt" if int(k) == 0 else f"{round_dir(k)}/train/member_{member}/model.pt"


def round_models(k):
    return [round_model(k, m) for m in range(N_MEMBERS)]


def round_dataset(k):
    return f"{OUT}/dataset/dataset.h5" if int(k) == 0 else f"{round_dir(k)}/dataset/dataset.h5"


def selected_frames(k):
    """The DFT frames that round k adds to the dataset: active.per_round selected candidates."""
    return [f"{round_dir(k)}/dft/sel_{i:03d}.h5" for i in range(config["active"]["per_round"])]


# The answer's committee and dataset: those of the last round (the first training without active learning).
# The single-model stages (parity, phonons_ml, supercell bands, accuracy, peers, performance) use its member 0;
# infer and linearize use every member.
MODEL = round_model(N_ROUNDS, 0)
DATASET = round_dataset(N_ROUNDS)


def committee_models(wildcards=None):
    return round_models(N_ROUNDS)


def train_processes():
    """torchrun processes: one per requested GPU, else the configured number of CPU processes."""
    res = config["resources"]
    return res["train_gpus"] or res["train_processes"]


def final_targets():
    return [
        f"{OUT}/phonons/phonon_bands.png",
        *[f"{OUT}/train/member_{m}/metrics.csv" for m in range(N_MEMBERS)],
        *([f"{OUT}/active/learning.png"] if N_TEST else []),
        f"{OUT}/parity/parity.png",
        f"{OUT}/phonons_ml/phonons_ml_vs_dft.png",
        f"{OUT}/bands/vf.csv",
        f"{OUT}/renormalization/renormalization.csv",
    ] + ([f"{OUT}/supercells/convergence.csv"] if config["thermal"]["ml_supercells"] else [])


def dft_input(wildcards):
    name = wildcards.config
    if name.startswith("check_T"):
        return f"{OUT}/thermal/infer_T{name[len('check_T'):].rsplit('_s', 1)[0]}.extxyz"
    for prefix, purpose in (("mc_T", "train"), ("test_T", "test")):
        if name.startswith(prefix):
            T, k = name[len(prefix):].rsplit("_s", 1)
            return f"{OUT}/thermal/{purpose}_T{T}/s{k}.extxyz"
    if name == "pristine":  # computed as the primitive cell, tiled to the supercell (dft_tile_input)
        return rules.structure.output[0]
    return f"{displace_dir()}/{name}.extxyz"


def dft_tile_input(wildcards):
    """The undisplaced supercell that the primitive cell's frame is tiled to (``mlepi dft --tile-to``,
    mlepi.dft.tiling) for the pristine frame: a 4-atom calculation instead of the whole supercell's. Else none."""
    return f"{displace_dir()}/pristine.extxyz" if wildcards.config == "pristine" else []


def dft_index(wildcards):
    """``--index K`` for a cross-check sample (its structure file holds all inferred samples), else nothing."""
    name = wildcards.config
    return f"--index {int(name.rsplit('_s', 1)[1])}" if name.startswith("check_T") else ""


def dft_priority(wildcards):
    """The training data first: the cross-check and test samples become ready with the training samples (all
    need only the phonons), but nothing waits for them until the band analysis and the test stage, so they
    should fill cores during training instead of delaying it."""
    return 0 if wildcards.config.startswith(("check_T", "test_T")) else 1


def prediction_input(wildcards):
    """Structures of ``infer/<prediction>.h5``: inference samples, a special displacement, or the pristine cell."""
    name = wildcards.prediction
    if name == "pristine":
        return f"{displace_dir()}/pristine.extxyz"
    if name.startswith("special_T"):
        return f"{OUT}/thermal/{name}.extxyz"
    return f"{OUT}/thermal/infer_{name}.extxyz"
