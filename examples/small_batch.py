"""Tiny mini-batches: plain batch norm, Batch Renormalization and group norm.

The sigmoid MLP of ``digits_mlp.py`` (scikit-learn's bundled digits, no
download) trained with mini-batches of 4 -- i.i.d., and non-i.i.d. (two
classes, two images each) -- and of 2, with a normalization layer before each
sigmoid:

* ``BatchNorm1d``: batch statistics in training, running statistics at test time;
* ``BatchNorm1d(renorm=True)``: Batch Renormalization (Ioffe, 2017), with the
  paper's schedule scaled down: ``rmax`` 1 -> 3 and ``dmax`` 0 -> 5 between
  steps 300 and 1500;
* ``GroupNorm(10, 100)``: per-sample statistics, independent of the batch.

Both batch norms use ``momentum=0.01`` (with 4 samples a batch the running
statistics need a long average).  Prints the held-out accuracy after 2000
steps, mean and range over three seeds.

Run: ``python examples/small_batch.py`` (about a minute on one core).
"""

import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastbn
from digits_mlp import iid_batch, load_data, run

STEPS = 2000
LEARNING_RATE = 0.2
SEEDS = (0, 1, 2)
MOMENTUM = 0.01


def ramp(step, start=300, stop=1500):
    """0 before ``start``, 1 after ``stop``, linear in between."""
    return min(max((step - start) / (stop - start), 0.0), 1.0)


NETWORKS = {
    "batch norm": lambda n: fastbn.BatchNorm1d(n, momentum=MOMENTUM),
    "batch renorm": lambda n: fastbn.BatchNorm1d(n, momentum=MOMENTUM, renorm=True,
                                                 rmax=lambda s: 1.0 + 2.0 * ramp(s),
                                                 dmax=lambda s: 5.0 * ramp(s)),
    "group norm (10 groups)": lambda n: fastbn.GroupNorm(10, n),
}


def two_class_batch(rng, labels, batch):
    """A non-i.i.d. mini-batch: ``batch // 2`` classes, two images of each."""
    classes = rng.choice(10, batch // 2, replace=False)
    return np.concatenate([rng.choice(np.nonzero(labels == c)[0], 2, replace=False)
                           for c in classes])


SETTINGS = {
    "batch 4, i.i.d.": (4, iid_batch),
    "batch 4, 2 classes x 2": (4, two_class_batch),
    "batch 2, i.i.d.": (2, iid_batch),
}


def main():
    fastbn.set_num_threads(1)       # tiny activations: threads cost more than they save
    threadpool_limits(1)
    data = load_data()
    start = time.perf_counter()
    print(f"{'setting':<24} {'network':<24} {'test accuracy (mean, min-max of 3 seeds)'}")
    for setting, (batch, sampler) in SETTINGS.items():
        for name, make_norm in NETWORKS.items():
            accs = [run(make_norm, data, LEARNING_RATE, steps=STEPS, batch=batch, seed=seed,
                        eval_every=STEPS, sampler=sampler)[-1, 1] for seed in SEEDS]
            print(f"{setting:<24} {name:<24} {np.mean(accs):.3f}  "
                  f"({min(accs):.3f}-{max(accs):.3f})", flush=True)
    print(f"({STEPS} SGD steps at lr={LEARNING_RATE} each; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
