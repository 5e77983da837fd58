"""Errors that are the user's to fix (bad config, wrong or missing file, unstable structure, SCF failure).

The CLI prints these as one line naming the field or file and exits with status 2; anything else is a
bug and keeps its traceback.
"""

# Not from .bands: every command imports this module, and .bands costs 0.8 s (scipy.optimize, matplotlib).
from .bands_config import BandsError
from .blocks import BlockAliasingError
from .config import ConfigError
from .dft import SCFConvergenceError
from .frames import FramesFileError
from .phonons import PhononError
from .provenance import ProvenanceError
from .structure_io import StructureFileError
from .thermal import UnstableModeError
from .torch_io import DeviceError, TorchFileError

USER_ERRORS = (BandsError, BlockAliasingError, ConfigError, DeviceError, FramesFileError, PhononError,
               ProvenanceError, SCFConvergenceError, StructureFileError, TorchFileError, UnstableModeError,
               FileNotFoundError)
