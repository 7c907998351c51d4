"""The in-memory training/evaluation dataset every model consumes.

``TrainData`` is built either from the gold partition the Spark jobs wrote (``from_gold``) or from
a pandas events frame with the same split rules (``from_events``, used by the offline CLI); a parity
test keeps the two identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass
class ItemFeatures:
    """Content features per item index (all arrays have length ``n_items``).

    ``category``/``brand``/``price_band`` are integer codes with 0 meaning unknown;
    ``attributes`` is a CSR multi-hot matrix (n_items × n_attributes) of any further attribute ids
    (e.g. the Amazon files' attribute ids). ``category_names`` maps codes back to names.
    """

    category: np.ndarray
    brand: np.ndarray
    price_band: np.ndarray
    attributes: sp.csr_matrix
    available: np.ndarray
    category_names: list[str] = field(default_factory=list)


@dataclass
class TrainData:
    """Indexed interactions of one split.

    * ``user_ids``/``item_ids``: external id per internal index (str arrays).
    * ``train``: CSR (n_users × n_items) of decayed, event-weighted interaction strength.
    * ``sequences``: per user index, the train item indices in time order (consecutive repeats
      collapsed), the input of sequential models and of history-based user encoders.
    * ``valid``/``test``: user index → array of target item indices.
    * ``item_features``: optional content features.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    sequences: list[np.ndarray]
    valid: dict[int, np.ndarray]
    test: dict[int, np.ndarray]
    item_features: ItemFeatures | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_popularity(self) -> np.ndarray:
        """Number of distinct train users per item."""
        return np.asarray((self.train > 0).sum(axis=0)).ravel().astype(np.float64)

    def history(self, user: int) -> np.ndarray:
        return self.sequences[user]
