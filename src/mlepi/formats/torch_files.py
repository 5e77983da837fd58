"""Reading the torch files mlepi writes (``model.pt``, ``checkpoint.pt``) with errors a user can act on."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from mlepi.errors import MlepiError


class TorchFileError(MlepiError, ValueError):
    """A model or training checkpoint file is missing, damaged or of another kind."""


class DeviceError(MlepiError, ValueError):
    """A device was asked for that torch cannot use here."""


def read_torch_file(path, schema: str | None, what: str, map_location="cpu") -> dict:
    """The dict saved in a torch file whose ``schema`` entry is ``schema`` (None: any dict); TorchFileError
    naming the file otherwise (missing, truncated, corrupted, or another kind of file). ``what`` describes
    the expected file."""
    path = Path(path)
    if not path.is_file():
        raise TorchFileError(f"{path}: no such file; expected {what}")
    try:
        # torch.load does not check the zip entries' CRC-32, so flipped bits in the weights would load
        # silently; zipfile's test reads every entry and checks it.
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        # weights_only: tensors and plain containers, never arbitrary pickled code
        state = None if damaged else torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zipfile, torch: BadZipFile, RuntimeError, UnpicklingError, EOFError, ...
        detail = ": ".join([type(err).__name__, *str(err).splitlines()[:1]])
        raise TorchFileError(f"{path}: cannot be read ({detail}); expected {what}; the file is damaged or "
                             "truncated") from None
    if damaged:
        raise TorchFileError(f"{path}: entry {damaged} fails its CRC check; the file is damaged, expected {what}")
    if not isinstance(state, dict) or schema not in (None, state.get("schema")):
        found = state.get("schema") if isinstance(state, dict) else type(state).__name__
        raise TorchFileError(f"{path}: is {found!r}, not {what} (schema {schema!r})")
    return state


def resolve_device(name: str):
    """The torch device for a config or command-line choice: 'auto' (CUDA when torch sees a GPU, else the CPU),
    'cpu', 'cuda' or 'cuda:N'. Asking for CUDA where torch sees none is an error that says what to do."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r}: torch sees no GPU (torch {torch.__version__}, CUDA build "
                           f"{torch.version.cuda}); use 'auto' or 'cpu'")
    return torch.device(name)
