"""Errors that are the user's to fix (bad config, wrong or missing file, unstable structure, SCF failure).

The CLI prints these as one line naming the field or file and exits with status 2; anything else is a
bug and keeps its traceback.
"""

# Not from .bands: every command imports this module, and .bands costs 0.8 s (scipy.optimize, matplotlib).
from mlepi.config.bands import BandsError
from mlepi.dft.matrices import BlockAliasingError
from mlepi.config import ConfigError
from mlepi.dft.scf import SCFConvergenceError
from mlepi.formats.frames import FramesFileError
from mlepi.vibrations.phonons import PhononError
from mlepi.formats.provenance import ProvenanceError
from mlepi.formats.structures import StructureFileError
from mlepi.vibrations.thermal import UnstableModeError
from mlepi.formats.torch_files import DeviceError, TorchFileError

USER_ERRORS = (BandsError, BlockAliasingError, ConfigError, DeviceError, FramesFileError, PhononError,
               ProvenanceError, SCFConvergenceError, StructureFileError, TorchFileError, UnstableModeError,
               FileNotFoundError)
