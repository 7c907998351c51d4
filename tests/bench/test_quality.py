"""bench.quality's verdict line and its published rows (the training itself is the offline CLI's, tested there)."""

from __future__ import annotations

from bench.quality import PUBLISHED_LATER, default_model_leads, render


def test_the_verdict_names_the_best_other_model_and_the_margin() -> None:
    rows = [
        {"model": "sasrec", "ndcg@10": 0.05, "hr@10": 0.09},
        {"model": "item_knn", "ndcg@10": 0.04, "hr@10": 0.095},
        {"model": "popularity", "ndcg@10": 0.01, "hr@10": 0.02},
    ]
    line = default_model_leads(rows, "sasrec")
    assert "does NOT beat" in line and "hr@10 0.0900 vs best other item_knn 0.0950 (-0.0050)" in line
    rows[1]["hr@10"] = 0.08
    assert "sasrec beats every other model" in default_model_leads(rows, "sasrec")
    assert "not compared" in default_model_leads(rows[1:], "sasrec")


def test_later_published_figures_are_rendered_beside_ours() -> None:
    ours = [{"model": "sasrec", "hr@10": 0.09, "ndcg@10": 0.05, "train_seconds": 1.0}]
    table = render(ours, PUBLISHED_LATER["amazon-beauty"])
    assert "eSASRec" in table and "0.0531" in table and "| measured | sasrec |" in table
