"""The ``bands`` config section as a frozen dataclass: each key once, with unit, bounds and meaning.

The JSON Schema of the section is generated from it (:func:`config_schema`); ``tests/test_config.py``
checks that the project schema (``config.schema.yaml``) says the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


class BandsError(ValueError):
    """The band analysis cannot proceed (inputs inconsistent with each other or with the config)."""


class WindowWeightError(BandsError):
    """One sample's four pi bands do not carry four states of unfolded weight inside the band window."""


def _key(default, unit: str, description: str, minimum=None, maximum=None, enum=None, exclusive_min=False):
    meta = {"unit": unit, "description": description, "minimum": minimum, "maximum": maximum, "enum": enum,
            "exclusive_minimum": exclusive_min}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BandsConfig:
    """The ``bands`` config section; each key once, with unit, bounds and meaning (see :func:`config_schema`)."""

    k_range_1_A: float = _key(0.1, "1/Angstrom", "largest |k - K| on each branch (K->Gamma, K->M)", 0.0, 0.8,
                              exclusive_min=True)
    n_k: int = _key(21, "", "k points per branch, K included (path has 2 n_k - 1 points)", 3, 401)
    band_window_eV: float = _key(1.5, "eV", "half width of the window around E_F in which the four pi bands "
                                 "are looked for", 0.0, 10.0, exclusive_min=True)
    max_rejected_fraction: float = _key(0.25, "", "largest fraction of the samples at one temperature that may "
                                        "be left out because their unfolded weight in the band window is not "
                                        "4 (a model H with a spurious state near E_F); above it the stage "
                                        "fails", 0.0, 1.0)
    band_method: str = _key("centroid", "", "how four band energies are read from unfolded states: "
                            "'centroid' (weight-quantile centroids) or 'max_weight' (the four states with the "
                            "largest weight)", enum=("centroid", "max_weight"))
    energy_reference: str = _key("k_midpoint", "", "energy zero of each sample: 'k_midpoint' (mean of the two "
                                 "middle bands at K, the band-touching point) or 'fermi_level' (the frame's "
                                 "stored E_F)", enum=("k_midpoint", "fermi_level"))
    spectral_emin_eV: float = _key(-1.0, "eV", "lower end of the A(k, E) energy grid, relative to the zero",
                                   -20.0, 0.0)
    spectral_emax_eV: float = _key(1.0, "eV", "upper end of the A(k, E) energy grid, relative to the zero",
                                   0.0, 20.0, exclusive_min=True)
    n_energy: int = _key(401, "", "points of the A(k, E) energy grid", 11, 20001)
    broadening_eV: float = _key(0.02, "eV", "Lorentzian HWHM or Gaussian sigma of A(k, E)", 0.0, 1.0,
                                exclusive_min=True)
    broadening_kind: str = _key("lorentzian", "", "line shape of A(k, E)", enum=("lorentzian", "gaussian"))
    slope_q_min_1_A: float = _key(0.03, "1/Angstrom", "smallest |k - K| used by the outer-band slope check",
                                  0.0, 0.8)
    n_bootstrap: int = _key(200, "", "bootstrap resamplings of the samples for the errors (0: none)", 0, 100000)
    seed: int = _key(0, "", "seed of the bootstrap", 0, 2 ** 32 - 1)
    dft_check_samples: int = _key(2, "", "inferred samples per temperature that GPAW recomputes for the DFT "
                                  "cross-check of the band energies at K (renormalization stage; 0: none)", 0, 1000)
    degeneracy_tol_eV: float = _key(1e-6, "eV", "supercell states closer than this count as degenerate in "
                                    "the unfolding", 0.0, 0.01)
    overlap_min: float = _key(0.0, "", "canonical orthogonalisation: eigenvectors of S(K) with eigenvalue below "
                              "this are left out of the eigenproblem (near-linear dependencies of the basis, "
                              "along which a model or linearized H can put spurious states near E_F); 0: exact",
                              0.0, 0.1)
    max_displacement_A: float = _key(1.0, "Angstrom", "largest distance of an atom from its reference site "
                                     "before the frame is rejected", 0.0, 5.0, exclusive_min=True)
    map_tol_A: float = _key(1e-3, "Angstrom", "tolerance of the supercell -> primitive atom mapping", 0.0, 0.5,
                            exclusive_min=True)

    @classmethod
    def from_dict(cls, section: dict | None) -> "BandsConfig":
        """Validated config; unknown keys, wrong types and out-of-bounds values are errors."""
        section = dict(section or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise BandsError(f"unknown bands config keys {unknown}; known: {sorted(known)}")
        cfg = cls(**{name: _check_value(known[name], value) for name, value in section.items()})
        if cfg.spectral_emin_eV >= cfg.spectral_emax_eV:
            raise BandsError("bands: spectral_emin_eV must be below spectral_emax_eV")
        if cfg.slope_q_min_1_A >= cfg.k_range_1_A:
            raise BandsError("bands: slope_q_min_1_A must be below k_range_1_A")
        return cfg


def _check_value(f, value):
    """The value, ints promoted to float for float keys; BandsError naming the key if it does not fit."""
    meta = f.metadata
    kind = type(f.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BandsError(f"bands.{f.name} must be {kind.__name__}, got {value!r}")
    if meta["enum"] is not None and value not in meta["enum"]:
        raise BandsError(f"bands.{f.name} must be one of {meta['enum']}, got {value!r}")
    lo, hi = meta["minimum"], meta["maximum"]
    if lo is not None and (value < lo or (meta["exclusive_minimum"] and value == lo)):
        raise BandsError(f"bands.{f.name} = {value} is below its bound {lo} {meta['unit']}")
    if hi is not None and value > hi:
        raise BandsError(f"bands.{f.name} = {value} is above its bound {hi} {meta['unit']}")
    return value


def config_schema() -> dict:
    """JSON Schema of the ``bands`` section, generated from :class:`BandsConfig` (one definition)."""
    props = {}
    for f in fields(BandsConfig):
        meta = f.metadata
        unit = f" ({meta['unit']})" if meta["unit"] else ""
        prop = {"type": {float: "number", int: "integer", str: "string"}[type(f.default)],
                "default": f.default, "description": meta["description"] + unit}
        if meta["enum"] is not None:
            prop["enum"] = list(meta["enum"])
        if meta["minimum"] is not None:
            prop["exclusiveMinimum" if meta["exclusive_minimum"] else "minimum"] = meta["minimum"]
        if meta["maximum"] is not None:
            prop["maximum"] = meta["maximum"]
        props[f.name] = prop
    return {"type": "object", "additionalProperties": False, "properties": props}

