"""The digits MLP of digits.py, checkpointed: a trial that runs again resumes (docs/checkpoints.md).

Each epoch the model, the random generator and the epoch are pickled into
``trialforge.checkpoint_dir()`` (a new file renamed over the old one: the
directory itself may be a mount point and is never replaced), and the step is
reported with ``checkpoint=True``.  At the start, a checkpoint that is there is
loaded and training goes on with the next epoch.  SIGTERM (a preemption, an
eviction, the local runner stopping) ends the epoch in progress, saves, and
exits with 143.  Without a checkpoint directory (a cluster trial without
``spec.trial.checkpoint``) it trains from the start every time.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

import trialforge

STOP = False


def _stop(*_: Any) -> None:
    global STOP
    STOP = True  # finish the epoch, save, leave


def save(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / "checkpoint.pkl.tmp"
    with open(tmp, "wb") as handle:
        pickle.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / "checkpoint.pkl")


def load(folder: Path | None) -> dict[str, Any] | None:
    path = folder / "checkpoint.pkl" if folder is not None else None
    if path is None or not path.exists():
        return None
    with open(path, "rb") as handle:
        return pickle.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--epoch-pause", type=float, default=0.0, help="seconds after each epoch")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    seed = trialforge.seed()

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    classes = np.unique(y)

    folder = trialforge.checkpoint_dir()
    state = load(folder)
    if state is None:
        model = MLPClassifier(
            hidden_layer_sizes=(args.hidden,), learning_rate_init=args.lr, random_state=seed
        )
        state = {"model": model, "rng": np.random.default_rng(seed), "epoch": 0}
    else:
        print(f"resuming after epoch {state['epoch']}", file=sys.stderr, flush=True)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    model, rng = state["model"], state["rng"]
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        accuracy = float(model.score(x_val, y_val))
        if folder is not None:
            save(folder, {"model": model, "rng": rng, "epoch": epoch})
        trialforge.report(step=epoch, checkpoint=folder is not None, val_accuracy=accuracy)
        if STOP:
            sys.exit(128 + signal.SIGTERM)
        if args.epoch_pause:
            time.sleep(args.epoch_pause)  # SIGTERM cuts it short; the next check leaves
            if STOP:
                sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
