"""Which frames train and which validate: the seeded split by groups, the split an active-learning round keeps,
and a member's bootstrap resample (``mlepi.ml.train``, ``docs/hedgenet.md``)."""

from __future__ import annotations

import numpy as np


def split_group(frame) -> tuple:
    """Frames that must fall on the same side of the split: an antithetic pair (u and −u) of thermal samples.

    Validating on the mirror image of a training sample would flatter the model; every other frame is
    its own group.
    """
    info = frame.info
    if info.get("kind") == "thermal" and info.get("antithetic"):
        return ("thermal", info.get("purpose"), float(info["temperature_K"]), int(info["sample_index"]) // 2)
    return ("frame", frame.name)


def split_indices(groups, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of frames into (train, validation) indices by whole groups (:func:`split_group`).

    ``groups`` holds one hashable key per frame. The validation set gets ``round(val_fraction × n_groups)``
    groups, at least one if ``val_fraction > 0``, and at least one group always trains.
    """
    groups = list(groups)
    unique = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = min(int(round(val_fraction * len(unique))), len(unique) - 1)
    if val_fraction > 0 and len(unique) >= 2:
        n_val = max(n_val, 1)
    val_groups = {unique[g] for g in order[:n_val]}
    is_val = np.array([g in val_groups for g in groups], bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def kept_split(names: list[str], validation: list[str], dataset_path) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices that keep the validation frames ``validation`` of the model a round starts
    from; every other frame, the round's new ones included, trains."""
    missing = sorted(set(validation) - set(names))
    if missing:
        raise ValueError(f"{dataset_path}: lacks the validation frames {missing} of the model the round starts "
                         "from; a round's dataset holds the previous round's frames and adds to them")
    is_val = np.isin(names, validation)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def bootstrap_indices(groups, train_idx: np.ndarray, seed: int) -> np.ndarray:
    """A bootstrap resample of the training frames ``train_idx``: as many groups (:func:`split_group`) as they
    hold, drawn with replacement (seeded), each with all its frames; a group drawn twice trains twice.

    Resampling whole groups keeps an antithetic pair together, as the split does; the validation frames are
    never drawn. Sorted, so that the loader's order depends on the shuffling seed alone.
    """
    groups = list(groups)
    members = {}
    for k in train_idx:
        members.setdefault(groups[k], []).append(int(k))
    keys = list(members)
    drawn = np.random.default_rng([seed, 1]).integers(0, len(keys), size=len(keys))
    return np.sort(np.concatenate([members[keys[g]] for g in drawn]))
