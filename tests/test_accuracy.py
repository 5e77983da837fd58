"""The data-scaling fit of the learning-curve benchmark (mlepi.evaluation.accuracy.data_scaling)."""

import numpy as np
import pytest

from mlepi.evaluation.accuracy import data_scaling


def test_power_law_is_recovered_and_extrapolated_to_the_goal():
    n = np.array([4, 9, 14, 19])
    fit = data_scaling(n, 30.0 * n ** -0.5, goal=1.0)
    assert fit["exponent"] == pytest.approx(0.5) and fit["prefactor"] == pytest.approx(30.0)
    assert fit["frames_for_goal"] == pytest.approx(900.0)  # 30 / sqrt(900) = 1


def test_errors_that_do_not_fall_give_no_extrapolation():
    assert data_scaling([4, 9, 14], [3.0, 3.0, 3.1], goal=1.0)["frames_for_goal"] is None
    with pytest.raises(ValueError, match="two or more"):
        data_scaling([9], [3.0], goal=1.0)
