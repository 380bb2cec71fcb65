"""A small PyTorch MLP on scikit-learn's bundled 8x8 digits, reporting via ``trialforge.report()``.

No downloads (the digits ship with scikit-learn), CPU by default, a GPU when one
is visible (``--device auto``). Each epoch reports ``train_loss``, ``val_loss``
and ``val_accuracy``; ``report()`` pushes to the collector sidecar when the
trial's metrics source is ``push`` and prints a JSON line otherwise, so the same
script runs under ``trialforge run``, in a cluster trial, and by hand.

    python examples/trainers/torch_digits.py --lr 0.01 --hidden 64 --epochs 10
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import trialforge


def build_model(hidden: int, layers: int, dropout: float) -> nn.Module:
    blocks: list[nn.Module] = []
    width = 64  # 8x8 pixels
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    blocks.append(nn.Linear(width, 10))
    return nn.Sequential(*blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    args = parser.parse_args()

    seed = trialforge.seed()
    torch.manual_seed(seed)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    xt = torch.tensor(x_train, dtype=torch.float32, device=device)
    yt = torch.tensor(y_train, dtype=torch.long, device=device)
    xv = torch.tensor(x_val, dtype=torch.float32, device=device)
    yv = torch.tensor(y_val, dtype=torch.long, device=device)

    model = build_model(args.hidden, args.layers, args.dropout).to(device)
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=args.lr)
        if args.optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    )
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator(device="cpu").manual_seed(seed)

    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(xt), generator=generator).to(device)
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
            total += float(loss) * len(batch)
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            val_loss = float(loss_fn(logits, yv))
            val_accuracy = float((logits.argmax(dim=1) == yv).float().mean())
        trialforge.report(
            step=epoch,
            train_loss=total / len(xt),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            epoch_seconds=time.perf_counter() - started,
        )


if __name__ == "__main__":
    main()
