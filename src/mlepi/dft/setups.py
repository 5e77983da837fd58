"""GPAW's PAW setups and basis sets: present before any SCF starts, or one clear error.

GPAW itself finds a missing file only inside the first SCF step, and says so in several lines about
GPAW_SETUP_PATH. The setups come from the ``gpaw-data`` package (installed by ``scripts/setup.sh`` and the
conda environments), so no download happens at run time.
"""

from __future__ import annotations

from gpaw import setup_paths
from gpaw.setup_data import search_for_file
from gpaw.xc import XC

from mlepi.errors import MlepiError


class SetupsNotFoundError(MlepiError, FileNotFoundError):
    """GPAW's PAW setup or basis-set file for an element is not installed."""


def basis_file_name(basis: str) -> str:
    """The basis-set file a GPAW basis name reads: ``dz(dzp)`` is the dz part of the ``dzp`` file."""
    return basis[basis.index("(") + 1:-1] if "(" in basis else basis


def check_setups(symbols, xc: str, basis: str) -> None:
    """Raise :class:`SetupsNotFoundError`, naming element, file and search path, for the first PAW setup (of
    functional ``xc``) or basis file (``basis``) of ``symbols`` that GPAW cannot find."""
    setup_name = XC(xc).get_setup_name()
    for symbol in sorted(set(symbols)):
        for name, what in ((f"{symbol}.{setup_name}", f"PAW setup ({setup_name})"),
                           (f"{symbol}.{basis_file_name(basis)}.basis", f"basis set (dft.basis = {basis})")):
            try:
                search_for_file(name)
            except FileNotFoundError:
                raise SetupsNotFoundError(
                    f"GPAW has no {what} for {symbol}: {name}[.gz] is in none of {[str(p) for p in setup_paths]};"
                    " install the gpaw-data package (scripts/setup.sh does) or point GPAW_SETUP_PATH at a folder "
                    "that holds it") from None
