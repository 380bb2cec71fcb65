"""A stand-in training whose outcome is known: for A/B tests of configurations.

Each run "trains" for a few epochs and reports ``val_accuracy`` approaching its
final value.  The final value is the configuration's true mean plus noise from
the run's seed (``TRIALFORGE_SEED``), as run-to-run variation in real training
comes from the seed.  The true mean is

    0.80 + 0.03 * min(warmup, 100) / 100 - 0.2 * max(0, lr - 0.3)

so warmup helps, a learning rate above 0.3 hurts, and anything else is noise:
an experiment's verdicts can be checked against the truth.  Standard library
only (plus the trialforge client), so a run takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from trialforge import log_artifact, report, seed

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--warmup", type=int, default=0)
parser.add_argument("--noise", type=float, default=0.01, help="sd of the run-to-run noise")
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--fail-rate", type=float, default=0.0, help="chance a run crashes")
args = parser.parse_args()

rng = random.Random(seed())
true_mean = 0.80 + 0.03 * min(args.warmup, 100) / 100 - 0.2 * max(0.0, args.lr - 0.3)
final = true_mean + rng.gauss(0.0, args.noise)
if rng.random() < args.fail_rate:
    raise SystemExit("the run crashed (simulated)")
for epoch in range(1, args.epochs + 1):
    # A learning curve that ends exactly at the run's final value.
    report(step=epoch, val_accuracy=final - 0.2 * (args.epochs - epoch) / args.epochs)
    time.sleep(0.01)

trial = os.environ.get("TRIALFORGE_TRIAL", "local")
out = Path(os.environ.get("TRIALFORGE_ARTIFACT_DIR", tempfile.gettempdir())) / "trialforge-ab"
out.mkdir(parents=True, exist_ok=True)
model = out / f"{trial}.json"
model.write_text(json.dumps({"lr": args.lr, "warmup": args.warmup, "val_accuracy": final}))
log_artifact(model.as_uri())
