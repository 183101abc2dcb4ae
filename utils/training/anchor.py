"""The anchor-function tasks on which the paper trains its Transformers (its Figures 7 and D1).

Anchor functions are Zhang et al.'s (2025) synthetic language tasks; this is our own generator,
written from their description (their public code, ``xuzhiqin1990/anchor_function_pub``, was
read, not copied). A sequence holds :data:`CONTEXT` = 8 context tokens and one target token:

1. every context token is drawn uniformly from the background values 20..100 (:data:`BACKGROUND`);
2. a *key value* x0 is drawn from the split's keys (below) and a position p;
3. the rule writes its anchors and the key x = x0 + p into the context and sets the target:

   * ``"3x_to_x"`` (the paper's Figure D1): the anchor 3 at p ∈ [0, 6], the key x at p + 1;
     target x;
   * ``"composition"`` (a compositional rule, as the paper's Figure 7 uses one): two anchors
     a1, a2 ∈ {1, 2, 3, 4} at p and p + 1 and the key at p + 2 (p ∈ [0, 5]); target
     x + s(a1) + s(a2), with the shifts s = {1: +5, 2: +1, 3: −2, 4: −8} of Zhang et al.'s
     single anchors (:data:`SHIFTS`).

**Split.** As in Zhang et al., train and test differ in the key value: the test keys are the
values in [20, 100) divisible by 8, the train keys the others (:func:`key_values`). The
anchors (≤ 4) never occur among the background values (≥ 20), so the anchor's position, hence
p, hence x0 = x − p, can be read off every sequence: no test sequence equals a training one.

The vocabulary has :data:`VOCAB_SIZE` = 201 token ids (0..200); the largest target is
99 + 6 + 10 = 115. Inputs are (N, 8) token ids, targets (N,) token ids, and the loss is the
cross-entropy of the model's output at the last position (:func:`utils.training.losses.
cross_entropy`), as the paper trains them.
"""
from __future__ import annotations

import numpy as np
import torch

from utils.validation import check_choice, check_number

CONTEXT = 8
"""Context tokens per sequence; the target is the ninth token."""
BACKGROUND = (20, 100)
"""The background values, both ends included."""
KEY_RANGE = (20, 100)
"""Key values x0 lie in [20, 100) (end excluded)."""
TEST_MODULUS = 8
"""A key value divisible by this is a test key."""
VOCAB_SIZE = 201
SHIFTS = {1: 5, 2: 1, 3: -2, 4: -8}
"""The single anchors' shifts, composed by the ``"composition"`` rule."""
_SHIFT_OF = np.array([SHIFTS.get(a, 0) for a in range(max(SHIFTS) + 1)])
"""SHIFTS as an array indexed by the anchor token."""
RULES = ("3x_to_x", "composition")
SPLITS = ("train", "test")


def key_values(split: str) -> np.ndarray:
    """The key values x0 of ``split``: test, those of [20, 100) divisible by 8; train, the rest."""
    check_choice("split", split, SPLITS)
    keys = np.arange(*KEY_RANGE)
    test = keys % TEST_MODULUS == 0
    return keys[test] if split == "test" else keys[~test]


def anchor_sequences(rule: str, n: int, split: str, seed: int = 0) -> np.ndarray:
    """``n`` sequences of ``rule`` drawn under ``seed`` from ``split``'s keys: an (n, 9) int64
    array, the 8 context tokens and the target in the last column. The same arguments give the
    same array; train and test are drawn from independent streams."""
    check_choice("rule", rule, RULES)
    check_number("n", n, low=1, integer=True)
    check_number("seed", seed, low=0, integer=True)
    rng = np.random.default_rng([seed, RULES.index(rule), SPLITS.index(check_choice(
        "split", split, SPLITS))])
    seq = rng.integers(BACKGROUND[0], BACKGROUND[1] + 1, size=(n, CONTEXT + 1))
    rows = np.arange(n)
    x0 = rng.choice(key_values(split), size=n)
    if rule == "3x_to_x":
        p = rng.integers(0, CONTEXT - 1, size=n)          # anchor at p, key at p + 1 ≤ 7
        x = x0 + p
        seq[rows, p], seq[rows, p + 1], seq[:, -1] = 3, x, x
    else:
        p = rng.integers(0, CONTEXT - 2, size=n)          # anchors at p, p + 1; key at p + 2
        anchors = np.array(sorted(SHIFTS))
        a1, a2 = rng.choice(anchors, size=n), rng.choice(anchors, size=n)
        x = x0 + p
        seq[rows, p], seq[rows, p + 1], seq[rows, p + 2] = a1, a2, x
        seq[:, -1] = x + _SHIFT_OF[a1] + _SHIFT_OF[a2]
    return seq


def read_key(seq: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(x0, p) of each sequence of ``rule``, read back from its context: p is the position of
    the first anchor (the only tokens below 20), x0 the key minus p."""
    check_choice("rule", rule, RULES)
    context = np.asarray(seq)[:, :CONTEXT]
    p = np.argmax(context < BACKGROUND[0], axis=1)
    offset = 1 if rule == "3x_to_x" else 2
    return context[np.arange(len(context)), p + offset] - p, p


def rule_target(seq: np.ndarray, rule: str) -> np.ndarray:
    """The target each sequence's context implies under ``rule`` (computed from the context
    alone, to check the generator)."""
    context = np.asarray(seq)[:, :CONTEXT]
    x0, p = read_key(seq, rule)
    x = x0 + p
    if rule == "3x_to_x":
        return x
    rows = np.arange(len(context))
    return x + _SHIFT_OF[context[rows, p]] + _SHIFT_OF[context[rows, p + 1]]


def anchor_function(rule: str = "3x_to_x", n: int = 1800, split: str = "train", seed: int = 0,
                    dtype="float64", n_test: int = 0):
    """The anchor-function data set (module docstring) as a :class:`~utils.training.data.
    Dataset`: inputs (n, 8) token ids, targets (n,) token ids; ``info`` names the loss
    (``"cross_entropy"``), the vocabulary and the context length. ``n_test`` > 0 (with
    ``split="train"``) attaches ``n_test`` sequences of the test keys, drawn under the same seed,
    as its ``test`` set (Zhang et al.'s 1,800 + 200 is ``n=1800, n_test=200``). ``dtype`` is
    accepted for the book's other data sets' signature (token ids are always int64)."""
    from utils.training.data import Dataset

    check_number("n_test", n_test, low=0, integer=True)
    if n_test and split != "train":
        raise ValueError(f"n_test: a held-out set goes with split='train', got split={split!r}")
    seq = torch.from_numpy(anchor_sequences(rule, n, split, seed))
    test = anchor_function(rule, n_test, "test", seed) if n_test else None
    return Dataset(seq[:, :CONTEXT].clone(), seq[:, -1].clone(), {
        "name": "anchor", "rule": rule, "split": split, "n": n, "n_test": n_test,
        "vocab_size": VOCAB_SIZE, "seq_len": CONTEXT, "n_classes": VOCAB_SIZE,
        "loss": "cross_entropy"}, test)
