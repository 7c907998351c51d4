"""Content-based model: TF-IDF profiles over category/brand/price band/attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from evaluation.data import ItemFeatures
from evaluation.evaluate import evaluate
from models.content import ContentBased, feature_matrix, tfidf_rows
from tests.models.test_knn import PER_GROUP, assert_export_roundtrip, planted_data, popularity_hr


def test_tfidf_rows_are_unit_and_downweight_common_features() -> None:
    multi_hot = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    rows, idf = tfidf_rows(multi_hot)
    norms = np.linalg.norm(rows.toarray(), axis=1)
    np.testing.assert_allclose(norms, [1, 1, 1, 0], atol=1e-6)
    assert idf[0] < idf[1] == idf[2]


def test_feature_matrix_skips_unknown_codes() -> None:
    features = ItemFeatures(
        category=np.array([1, 0, 2]),
        brand=np.array([0, 0, 1]),
        price_band=np.array([0, 3, 0]),
        attributes=sp.csr_matrix((3, 2), dtype=np.float32),
        available=np.ones(3, dtype=bool),
    )
    dense = feature_matrix(features).toarray()
    assert dense.shape == (3, 2 + 1 + 3 + 2)
    assert dense[1].sum() == 1  # only the price band is known
    assert dense.sum() == 4


def test_content_recommends_the_users_group(tmp_path: Path) -> None:
    data = planted_data()
    model = ContentBased(profile="quick").fit(data)
    users = np.array(sorted(data.test))
    hists = [np.concatenate([data.sequences[u], data.valid[u]]) for u in users]
    top, _ = model.recommend(users, hists, k=3)
    same_group = top // PER_GROUP == (np.array([h[-1] for h in hists]) // PER_GROUP)[:, None]
    assert same_group.mean() == 1.0
    assert evaluate(model, data, ks=(5,))["hr@5"] > popularity_hr(data, 5)
    assert_export_roundtrip(model, data, tmp_path)


def test_content_needs_item_features() -> None:
    data = planted_data()
    data.item_features = None
    with pytest.raises(ValueError, match="item_features"):
        ContentBased(profile="quick").fit(data)
