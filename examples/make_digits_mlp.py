"""Makes the small model that ``quantpress demo`` compresses: a 64-256-128-10 MLP on scikit-learn's
8x8 digits, trained with a plain NumPy loop (Adam, mini-batches of 32, fixed seeds).

Writes ``python/quantpress/data/digits_mlp.safetensors`` (float32, PyTorch layout: ``fcN.weight``
is ``(out, in)``, ``fcN.bias`` is ``(out,)``; ReLU between layers, inputs are pixels / 16) and
``python/quantpress/data/digits_test.npz`` (the 25 % stratified test split that training never
saw: ``x`` uint8 pixels 0..16, ``y`` uint8 labels), so the demo needs no scikit-learn at run time.

The files are committed; rerun this only to change the model:
``python examples/make_digits_mlp.py``.
"""

from __future__ import annotations

import os

import numpy as np
from safetensors.numpy import save_file

SIZES = (64, 256, 128, 10)
OUT = os.path.join(os.path.dirname(__file__), "..", "python", "quantpress", "data")


def load_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x.astype(np.uint8), y.astype(np.uint8), test_size=0.25,
                                          stratify=y, random_state=seed)
    return xtr, xte, ytr, yte


def forward(params: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and each layer's input; ``params`` is ``[W1, b1, W2, b2, ...]`` with ``W`` (out, in)."""
    acts, h = [x], x
    n = len(params) // 2
    for i in range(n):
        h = h @ params[2 * i].T + params[2 * i + 1]
        if i < n - 1:
            h = np.maximum(h, 0)
            acts.append(h)
    return h, acts


def gradients(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    logits, acts = forward(params, x)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    g = (p / len(y)).astype(np.float32)
    grads: list[np.ndarray] = []
    for i in range(len(params) // 2 - 1, -1, -1):
        grads[:0] = [g.T @ acts[i], g.sum(axis=0)]
        if i:
            g = (g @ params[2 * i]) * (acts[i] > 0)
    return grads


def train(x: np.ndarray, y: np.ndarray, epochs: int = 40, lr: float = 1e-3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    params: list[np.ndarray] = []
    for i, o in zip(SIZES[:-1], SIZES[1:]):
        params += [(rng.standard_normal((o, i)) * np.sqrt(2.0 / i)).astype(np.float32), np.zeros(o, np.float32)]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            idx = order[start:start + 32]
            step += 1
            for j, g in enumerate(gradients(params, x[idx], y[idx])):
                m1[j] = 0.9 * m1[j] + 0.1 * g
                m2[j] = 0.999 * m2[j] + 0.001 * g * g
                upd = lr * (m1[j] / (1 - 0.9**step)) / (np.sqrt(m2[j] / (1 - 0.999**step)) + 1e-8)
                params[j] -= upd.astype(np.float32)
    return params


def main() -> None:
    xtr, xte, ytr, yte = load_split()
    params = train((xtr / 16.0).astype(np.float32), ytr.astype(np.int64))
    names = [f"fc{i // 2 + 1}.{'weight' if i % 2 == 0 else 'bias'}" for i in range(len(params))]
    tensors = {n: np.ascontiguousarray(p, np.float32) for n, p in zip(names, params)}
    acc = float((forward(params, (xte / 16.0).astype(np.float32))[0].argmax(axis=1) == yte).mean() * 100)
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "digits_mlp.safetensors"),
              metadata={"about": "64-256-128-10 ReLU MLP on sklearn digits (inputs: pixels / 16); "
                                 "made by examples/make_digits_mlp.py", "test_accuracy": f"{acc:.2f}"})
    np.savez_compressed(os.path.join(OUT, "digits_test.npz"), x=xte, y=yte)
    print(f"test accuracy {acc:.2f} % on {len(yte)} images; files in {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
