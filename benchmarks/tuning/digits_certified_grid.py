"""The lam / sigma grid behind benchmarks/digits-certified.yaml.

Tuning seeds 10-29 (never the reported 0-2): for each setting, train on all of digits,
remove a random 10 % with one batch Newton step (budget epsilon 1 at delta 1e-5), and
record the mean test accuracy, the largest epsilon spent and how many seeds spent the
whole budget (and so retrained). Writes benchmarks/out/tuning/digits_certified_grid.json.

    .venv/bin/python benchmarks/tuning/digits_certified_grid.py
"""

import copy
import json
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from unlearn.bench.certified import unit_features
from unlearn.certified import CertifiedLogReg
from unlearn.data import load_dataset

train, test = load_dataset({"name": "digits"})
X, y = unit_features(train.x.numpy()), train.y.numpy()
Xt, yt = unit_features(test.x.numpy()), test.y.numpy()
n = len(y)
cls = list(range(10))
out = []
with threadpool_limits(1):
    for lam in (0.05, 0.1, 0.2, 0.5):
        for sigma in (0.5, 1.0, 2.0):
            accs, eps10, retr = [], [], 0
            for seed in range(10, 30):
                m = CertifiedLogReg(lam=lam, sigma=sigma, epsilon=1.0, delta=1e-5, seed=seed).fit(
                    X, y, cls
                )
                perm = np.random.default_rng(seed).permutation(n)
                u = copy.deepcopy(m)
                rep = u.remove(np.sort(perm[: round(0.1 * n)]))
                retr += rep.retrained
                eps10.append(rep.epsilon_spent if not rep.retrained else float("inf"))
                accs.append(m.accuracy(Xt, yt))
            out.append(
                dict(
                    lam=lam,
                    sigma=sigma,
                    acc=float(np.mean(accs)),
                    eps10_max=float(max(eps10)),
                    eps10_med=float(np.median(eps10)),
                    retrained=retr,
                )
            )
            print(out[-1], flush=True)
dest = Path(__file__).resolve().parent.parent / "out" / "tuning"
dest.mkdir(parents=True, exist_ok=True)
(dest / "digits_certified_grid.json").write_text(json.dumps(out, indent=1))
