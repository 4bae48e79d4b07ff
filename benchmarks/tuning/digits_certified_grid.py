"""The lam / sigma grid behind benchmarks/digits-certified.yaml.

Tuning seeds 10-29 (never the reported 0-2): for each setting, train on all of digits,
remove a random 10 % with one batch Newton step (budget epsilon 1 at delta 1e-5), and
record the mean test accuracy, how many seeds spent the whole budget (and so retrained),
and the largest epsilon spent where none did. Writes
benchmarks/out/tuning/digits_certified_grid.json.

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

LAMS = (0.05, 0.1, 0.2, 0.5)
SIGMAS = (0.5, 1.0, 2.0)
SEEDS = range(10, 30)


def main() -> None:
    train, test = load_dataset({"name": "digits"})
    X, y = unit_features(train.x.numpy()), train.y.numpy()
    Xt, yt = unit_features(test.x.numpy()), test.y.numpy()
    n, classes = len(y), list(range(train.num_classes))
    out = []
    with threadpool_limits(1):
        for lam in LAMS:
            for sigma in SIGMAS:
                accs, eps, spent = [], [], 0
                for seed in SEEDS:
                    model = CertifiedLogReg(
                        lam=lam, sigma=sigma, epsilon=1.0, delta=1e-5, seed=seed
                    )
                    model.fit(X, y, classes)
                    forget = np.sort(np.random.default_rng(seed).permutation(n)[: round(0.1 * n)])
                    rep = copy.deepcopy(model).remove(forget)
                    spent += int(rep.retrained)
                    eps.append(rep.epsilon_spent)
                    accs.append(model.accuracy(Xt, yt))
                row = {
                    "lam": lam,
                    "sigma": sigma,
                    "test_acc": float(np.mean(accs)),
                    "spent_budget": spent,
                    "seeds": len(SEEDS),
                    "max_epsilon_if_none_spent": None if spent else float(max(eps)),
                }
                out.append(row)
                print(row, flush=True)
    dest = Path(__file__).resolve().parent.parent / "out" / "tuning"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "digits_certified_grid.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
