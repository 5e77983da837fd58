"""Conversions from the house units (eV, Å, amu, K; phonon frequencies in THz) to the units results are reported
in. Constants come from CODATA (``scipy.constants``), never retyped."""

from scipy.constants import c as SPEED_OF_LIGHT_M_S

THZ_TO_CM = 1e12 / (SPEED_OF_LIGHT_M_S * 100)  # 1 THz in cm^-1
