#!/usr/bin/env python3
"""Builds the XGBoost fixture that crates/core/tests/xgboost.rs checks Ringfence against.

Usage: python3 scripts/xgboost_fixture.py OUT_DIR

Trains small binary:logistic models on synthetic data whose columns are real catalog features
(with missing values, so default directions are exercised) and writes to OUT_DIR:
  - model.json: Booster.save_model output, the file Ringfence loads (50 trees, depth 6);
  - cases.json: {"xgboost_version", "feature_names", "n_trees", "cases": [{"features":
    {name: value|null}, "prediction": p, "contributions": [per feature..., bias]}]}, where
    `prediction` and `contributions` are xgboost's own `predict` and
    `predict(pred_contribs=True)` for 500 rows;
  - dart_model.json / dart_cases.json and forest_model.json / forest_cases.json: the same for a
    DART booster and a boosted random forest (num_parallel_tree = 3).

Needs numpy and xgboost (./scripts/test installs them). Everything is seeded: the output depends
only on the xgboost version.
"""

import json
import os
import sys

try:
    import numpy as np
    import xgboost as xgb
except ImportError as e:  # the Rust test turns this exit code into its failure message
    sys.stderr.write(f"xgboost_fixture.py: {e}; run ./scripts/test, which installs it\n")
    sys.exit(3)

FEATURES = [
    "tx.amount",
    "card.count_1m",
    "card.amount_zscore",
    "user.new_device",
    "device.other_users_24h",
    "ring.has_fraud",
    "tx.hour",
]
ROWS = 4000
CASES = 500


def dataset(rng, n):
    amount = np.round(rng.lognormal(3.5, 1.2, n), 2)
    count_1m = rng.poisson(0.4, n).astype(np.float64)
    zscore = rng.normal(0.0, 1.5, n)
    new_device = rng.integers(0, 2, n).astype(np.float64)
    other_users = rng.poisson(0.3, n).astype(np.float64)
    ring_fraud = (rng.random(n) < 0.08).astype(np.float64)
    hour = rng.integers(0, 24, n).astype(np.float64)
    x = np.column_stack([amount, count_1m, zscore, new_device, other_users, ring_fraud, hour])

    logit = (
        -3.0
        + 0.9 * np.log1p(amount) * (zscore > 1.0)
        + 0.8 * count_1m
        + 1.2 * new_device * (other_users > 0)
        + 2.0 * ring_fraud
        + 0.5 * ((hour < 6) | (hour > 22))
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)

    # Missing values: absent history (z-score, counts) and absent entities (device).
    for col, rate in [(1, 0.1), (2, 0.2), (3, 0.05), (4, 0.15)]:
        x[rng.random(n) < rate, col] = np.nan
    return x, y


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: xgboost_fixture.py OUT_DIR\n")
        sys.exit(2)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    rng = np.random.default_rng(20240601)
    x, y = dataset(rng, ROWS)
    train = xgb.DMatrix(x, label=y, feature_names=FEATURES, missing=np.nan)
    xc, _ = dataset(rng, CASES)
    common = {"objective": "binary:logistic", "tree_method": "hist", "seed": 7, "nthread": 1}

    # The main fixture: plain gradient boosting, 50 trees of depth 6.
    booster = xgb.train(
        {**common, "max_depth": 6, "eta": 0.3, "subsample": 0.9}, train, num_boost_round=50
    )
    write(out, "", booster, xc)
    # DART: trees carry dropout weights that prediction applies.
    dart = xgb.train(
        {**common, "booster": "dart", "max_depth": 4, "rate_drop": 0.2, "eta": 0.3},
        train,
        num_boost_round=15,
    )
    write(out, "dart_", dart, xc)
    # Boosted random forest: 3 parallel trees per round.
    forest = xgb.train(
        {**common, "max_depth": 4, "num_parallel_tree": 3, "subsample": 0.8, "colsample_bynode": 0.7},
        train,
        num_boost_round=5,
    )
    write(out, "forest_", forest, xc)


def write(out, prefix, booster, rows):
    """Saves PREFIXmodel.json and PREFIXcases.json for `rows`, plus rows set exactly on split
    thresholds as the JSON spells them (the float32 comparison edge)."""
    booster.save_model(os.path.join(out, prefix + "model.json"))
    xc = rows.copy()
    thresholds = []
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    trees = trees["gbtree"] if "gbtree" in trees else trees
    for tree in trees["model"]["trees"]:
        for i, left in enumerate(tree["left_children"]):
            if left != -1:
                thresholds.append((tree["split_indices"][i], tree["split_conditions"][i]))
    for row, (col, thr) in zip(range(0, len(xc), 5), thresholds):
        xc[row, col] = thr
    test = xgb.DMatrix(xc, feature_names=FEATURES, missing=np.nan)
    preds = booster.predict(test)
    contribs = booster.predict(test, pred_contribs=True)

    cases = []
    for i in range(len(xc)):
        feats = {
            name: (None if np.isnan(xc[i, j]) else float(xc[i, j])) for j, name in enumerate(FEATURES)
        }
        cases.append(
            {
                "features": feats,
                "prediction": float(preds[i]),
                "contributions": [float(c) for c in contribs[i]],
            }
        )
    with open(os.path.join(out, prefix + "cases.json"), "w") as f:
        json.dump(
            {
                "xgboost_version": xgb.__version__,
                "feature_names": FEATURES,
                "n_trees": len(trees["model"]["trees"]),
                "cases": cases,
            },
            f,
        )


if __name__ == "__main__":
    main()
