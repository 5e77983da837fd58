"""The ``bands`` config section as a typed, frozen view for the band analysis (``cfg.k_range_1_A`` rather than
``cfg["k_range_1_A"]``).

The schema (``config.schema.yaml``) defines and checks every key: type, unit, default, bounds and the stages that
read it. This class only gives the band stages' keys names and types; ``tests/test_config.py`` checks that its
fields are exactly the keys the schema says those stages read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from mlepi.config import section_config


@dataclass(frozen=True)
class BandsConfig:
    """What the band analysis reads of the ``bands`` section; units in the names (schema descriptions)."""

    k_range_1_A: float
    n_k: int
    band_window_eV: float
    max_rejected_fraction: float
    band_method: str
    energy_reference: str
    spectral_emin_eV: float
    spectral_emax_eV: float
    n_energy: int
    broadening_eV: float
    broadening_kind: str
    slope_q_min_1_A: float
    n_bootstrap: int
    seed: int
    degeneracy_tol_eV: float
    overlap_min: float
    max_displacement_A: float
    map_tol_A: float

    @classmethod
    def from_section(cls, section: dict | None = None) -> "BandsConfig":
        """The view of a ``bands`` section (any part of one: missing keys take the schema defaults; the section is
        validated, so an unknown key or a value out of bounds is a :class:`mlepi.config.ConfigError`)."""
        section = section_config("bands", section)
        # JSON Schema's number admits 1 for 1.0: keep floats floats, as the analysis records them
        return cls(**{f.name: float(section[f.name]) if f.type == "float" else section[f.name] for f in fields(cls)})
