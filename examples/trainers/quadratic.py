"""A trainer that takes a second: 'loss' is a noisy bowl whose floor is at x=0.3, y=-0.2.

Prints key=value lines (the smoke example reads that format), one per step,
with loss shrinking toward its floor the way a real training curve does.
"""

import os
import random
import sys
import time

x, y = float(sys.argv[1]), float(sys.argv[2])
rng = random.Random(int(os.environ.get("TRIALFORGE_SEED", "0")))
floor = (x - 0.3) ** 2 + (y + 0.2) ** 2
for step in range(1, 6):
    loss = floor + 1.0 / step + rng.gauss(0, 0.01)
    print(f"step={step} loss={loss:.6f}", flush=True)
    time.sleep(0.02)
