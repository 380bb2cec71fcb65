"""Accuracy against model size: an MLP on the bundled digits data, reporting both.

For the multi-objective example: maximise ``val_accuracy`` while minimising
``params_k`` (thousands of weights), so the result is a Pareto front rather
than one winner.  It also reports ``latency_ms``, the median time to predict
the validation set (450 images), which examples/digits-latency.yaml bounds.
``--solver sgd`` takes a ``--momentum``; with adam an empty ``--momentum=``
(an inactive conditional parameter) is fine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--solver", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--momentum", type=lambda s: float(s) if s else 0.9, default=0.9)
    args = parser.parse_args()
    seed = int(os.environ.get("TRIALFORGE_SEED", "0"))
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    model = MLPClassifier(
        hidden_layer_sizes=(args.hidden,) * args.layers,
        learning_rate_init=args.lr,
        max_iter=args.epochs,
        random_state=seed,
        solver=args.solver,
        momentum=args.momentum,
    ).fit(scaler.transform(x_train), y_train)
    weights = sum(w.size for w in model.coefs_) + sum(b.size for b in model.intercepts_)
    val = scaler.transform(x_val)
    times = []
    for _ in range(7):
        began = time.perf_counter()
        model.predict(val)
        times.append((time.perf_counter() - began) * 1000.0)
    print(
        json.dumps(
            {
                "step": args.epochs,
                "val_accuracy": float(model.score(scaler.transform(x_val), y_val)),
                "params_k": weights / 1000.0,
                "latency_ms": statistics.median(times),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
