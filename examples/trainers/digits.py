"""Train a small MLP on scikit-learn's bundled digits data; report validation accuracy per epoch.

No downloads: the 8x8 digits set ships with scikit-learn.  Parameters come on the
command line (filled in by Trialforge from ``${params.NAME}``); the seed comes
from ``TRIALFORGE_SEED`` so every trial is reproducible.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    seed = int(os.environ.get("TRIALFORGE_SEED", "0"))

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)

    model = MLPClassifier(
        hidden_layer_sizes=(args.hidden,) * args.layers,
        learning_rate_init=args.lr,
        alpha=args.alpha,
        batch_size=args.batch_size,
        random_state=seed,
    )
    classes = np.unique(y)
    rng = np.random.default_rng(seed)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        start = time.perf_counter()
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        val_accuracy = float(model.score(x_val, y_val))
        print(
            json.dumps(
                {
                    "step": epoch,
                    "val_accuracy": val_accuracy,
                    "train_loss": float(model.loss_),
                    "epoch_seconds": round(time.perf_counter() - start, 4),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
