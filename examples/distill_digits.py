"""Recovering a pruned + quantized MLP with knowledge distillation, on scikit-learn's digits.

A float32 teacher MLP (64-128-64-10) is trained with a plain NumPy loop (Adam). Students are
made from it by pruning with :func:`quantpress.prune` (unstructured magnitude at 80 % / 90 %,
or 2:4) and quantizing the weights (symmetric int8 per output channel, or int4 in groups of 32
inputs); each is then fine-tuned for a few epochs with :func:`quantpress.distillation_loss`
against the teacher's logits. The fine-tuning is quantization-aware: the forward pass uses the fake-quantized
(quantize + dequantize) masked weights, the gradient goes straight through to float "master"
weights, the pruning masks stay fixed (masked gradients), and the weights are quantized one last
time at the end. A smaller 64-16-10 student is also trained twice from the same start, once on
the hard labels only and once distilled from the teacher (T=2, alpha=0.5), from three different
starts; the table shows the mean test accuracies.

File sizes are those of raw binary files: the teacher's float32 weights and biases; a student's
packed pruning mask (1 bit per weight), the packed codes of the kept weights only, the float16
scales and the float32 biases.

Run: ``python examples/distill_digits.py`` (``tests/test_distill_digits.py`` asserts the numbers).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import quantpress as qp

Layers = list[tuple[np.ndarray, np.ndarray]]  # (W (in, out), b (out,)) per layer, float32


# ----------------------------------------------------------------------------- data and MLP

def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], stratified 75 / 25 train / test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    return xtr, xte, ytr.astype(np.int64), yte.astype(np.int64)


def init_mlp(sizes: list[int], seed: int) -> Layers:
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(np.float32), np.zeros(o, np.float32))
            for i, o in zip(sizes[:-1], sizes[1:])]


def forward(layers: Layers, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and each layer's input (for the backward pass); ReLU between layers."""
    acts = [x]
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
            acts.append(h)
    return h, acts


def backward(layers: Layers, acts: list[np.ndarray], dlogits: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    grads = []
    g = dlogits
    for i in range(len(layers) - 1, -1, -1):
        grads.append((acts[i].T @ g, g.sum(axis=0)))
        if i:
            g = (g @ layers[i][0].T) * (acts[i] > 0)
    return grads[::-1]


def accuracy(layers: Layers, x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(layers, x)[0].argmax(axis=1) == y).mean() * 100)


# ----------------------------------------------------------------------------- pruning (qp.prune)

def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Unstructured: keep the ``1 - sparsity`` fraction of weights of largest magnitude
    (``qp.prune``'s exact count; ties to the lower flat index)."""
    s = qp.prune(w, sparsity=sparsity)
    assert s.mask is not None
    return np.unpackbits(s.mask, count=w.size, bitorder="little").reshape(w.shape).astype(bool)


def mask_2_4(w: np.ndarray) -> np.ndarray:
    """2:4 semi-structured: in every 4 consecutive inputs of an output unit, keep the 2 largest.
    ``qp.prune`` groups along the last axis, so it prunes ``w.T`` (out, in)."""
    wt = np.ascontiguousarray(w.T)
    s = qp.prune(wt, method="nm", n=2, m=4)
    assert s.positions is not None
    pos = qp.unpack_bits(s.positions, 2, s.count).reshape(-1, 2).astype(np.intp)  # kept in-group positions
    keep = np.zeros((wt.size // 4, 4), bool)
    np.put_along_axis(keep, pos, True, axis=1)
    return keep.reshape(wt.shape).T


# ----------------------------------------------------------------------------- quantization

def quantize_weight(w: np.ndarray, bits: int) -> qp.QuantizedTensor:
    """Symmetric, groups along the input axis (axis 0 of ``(in, out)``): int8 per output channel,
    int4 in groups of 32. Zero weights stay exactly zero (code 0)."""
    return qp.quantize(w, bits=bits, group_size=None if bits == 8 else 32, axis=0, scheme="symmetric")


def fake_quant(layers: Layers, masks: list[np.ndarray], bits: Optional[int]) -> Layers:
    out = []
    for (w, b), m in zip(layers, masks):
        wm = w * m
        out.append((wm if bits is None else quantize_weight(wm, bits).dequantize(), b))
    return out


def file_size(arrays: list[np.ndarray]) -> int:
    """Bytes of a raw binary file holding ``arrays`` one after the other."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.bin")
        with open(path, "wb") as f:
            for a in arrays:
                f.write(np.ascontiguousarray(a).tobytes())
        return os.path.getsize(path)


def student_arrays(layers: Layers, masks: list[np.ndarray], bits: int) -> list[np.ndarray]:
    """Packed mask, packed codes of the kept weights, float16 scales, float32 biases per layer."""
    arrays = []
    for (w, b), m in zip(layers, masks):
        qt = quantize_weight(w * m, bits)
        codes = qp.unpack_bits(qt.codes, bits, w.size)  # in the quantizer's (out, in) order
        kept = codes[m.T.reshape(-1)]
        arrays += [np.packbits(m.T.reshape(-1)), qp.pack_bits(kept, bits), qt.scales, b]
    return arrays


# ----------------------------------------------------------------------------- training

LossFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def train(layers: Layers, x: np.ndarray, y: np.ndarray, loss_fn: LossFn, epochs: int, lr: float, seed: int,
          masks: Optional[list[np.ndarray]] = None, bits: Optional[int] = None) -> Layers:
    """Adam on mini-batches of 64. ``loss_fn(logits, batch_index, labels) -> (loss, dlogits)``.
    With masks, pruned weights stay zero; with ``bits``, the forward pass is fake-quantized and
    the gradient passes straight through to the float weights."""
    layers = [(w.copy(), b.copy()) for w, b in layers]
    masks = masks if masks is not None else [np.ones(w.shape, bool) for w, _ in layers]
    params = [p for wb in layers for p in wb]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    rng = np.random.default_rng(seed)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            used = fake_quant(layers, masks, bits)
            logits, acts = forward(used, x[idx])
            _, dlogits = loss_fn(logits, idx, y[idx])
            grads = [g for gw, gb in backward(used, acts, dlogits.astype(np.float32)) for g in (gw, gb)]
            step += 1
            for j, (p, g) in enumerate(zip(params, grads)):
                m1[j] = 0.9 * m1[j] + 0.1 * g
                m2[j] = 0.999 * m2[j] + 0.001 * g * g
                p -= (lr * (m1[j] / (1 - 0.9**step)) / (np.sqrt(m2[j] / (1 - 0.999**step)) + 1e-8)).astype(p.dtype)
            for (w, _), m in zip(layers, masks):
                w *= m
    return layers


def hard_loss(logits: np.ndarray, idx: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    return qp.cross_entropy(logits, y)


def kd_loss(teacher_logits: np.ndarray, temperature: float = 4.0, alpha: float = 0.9) -> LossFn:
    def fn(logits: np.ndarray, idx: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return qp.distillation_loss(logits, teacher_logits[idx], y, temperature, alpha)
    return fn


# ----------------------------------------------------------------------------- the experiment

@dataclass
class Row:
    name: str
    before: float
    after: float
    size: int


@dataclass
class Results:
    teacher_acc: float
    teacher_size: int
    rows: list[Row] = field(default_factory=list)
    small_hard: float = 0.0
    small_kd: float = 0.0
    transfer_hard: float = 0.0
    transfer_kd: float = 0.0


CONFIGS = {  # name -> (pruning, bits)
    "80% + int8": (0.8, 8), "90% + int8": (0.9, 8), "2:4 + int8": ("2:4", 8),
    "80% + int4": (0.8, 4), "2:4 + int4": ("2:4", 4),
}


def compress_and_recover(teacher: Layers, data: tuple, pruning, bits: int, epochs: int, seed: int) -> Row:
    xtr, xte, ytr, yte = data
    masks = [mask_2_4(w) if pruning == "2:4" else magnitude_mask(w, pruning) for w, _ in teacher]
    before = accuracy(fake_quant(teacher, masks, bits), xte, yte)
    t_logits = forward(teacher, xtr)[0]
    student = train(teacher, xtr, ytr, kd_loss(t_logits), epochs, 3e-3, seed, masks, bits)
    after = accuracy(fake_quant(student, masks, bits), xte, yte)
    name = f"{pruning if isinstance(pruning, str) else f'{pruning:.0%}'} + int{bits}"
    return Row(name, before, after, file_size(student_arrays(student, masks, bits)))


def soft_loss(teacher_logits: np.ndarray, temperature: float = 2.0) -> LossFn:
    """Pure distillation: the teacher's softened outputs are the only targets (no labels)."""
    def fn(logits: np.ndarray, idx: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return qp.distillation_loss(logits, teacher_logits[idx], None, temperature)
    return fn


def run(configs: tuple[str, ...] = tuple(CONFIGS), seed: int = 0, teacher_epochs: int = 20,
        recover_epochs: int = 15, small_epochs: int = 80, small_seeds: int = 3, full_data_small: bool = True,
        labelled: float = 0.1) -> Results:
    """The whole experiment. Two small-student (64-16-10) comparisons, each the mean of
    ``small_seeds`` starts with the same start and batch order for both students:

    * full data (``full_data_small``): hard labels vs distillation on the same labelled set. On
      digits a 16-unit student already reaches the teacher's level, so the two end within noise.
    * transfer set: only ``labelled`` of the training images have labels. The hard-label student
      trains on those; the distilled one learns from the teacher's outputs on every training
      image (Hinton et al.'s unlabelled transfer set), which is where distillation pays.
    """
    data = load_data(seed)
    xtr, xte, ytr, yte = data
    teacher = train(init_mlp([64, 128, 64, 10], seed), xtr, ytr, hard_loss, teacher_epochs, 3e-3, seed)
    res = Results(accuracy(teacher, xte, yte), file_size([a for wb in teacher for a in wb]))
    for name in configs:
        pruning, bits = CONFIGS[name]
        res.rows.append(compress_and_recover(teacher, data, pruning, bits, recover_epochs, seed + 1))
    t_logits = forward(teacher, xtr)[0]
    lab = np.random.default_rng(seed).permutation(len(xtr))[: max(10, int(len(xtr) * labelled))]
    hard, kd, t_hard, t_kd = [], [], [], []
    for i in range(small_seeds):
        start = init_mlp([64, 16, 10], seed + 2 + i)
        if full_data_small:
            hard.append(accuracy(train(start, xtr, ytr, hard_loss, small_epochs, 3e-3, seed + 3 + i), xte, yte))
            kd.append(accuracy(train(start, xtr, ytr, kd_loss(t_logits, 2.0, 0.5), small_epochs, 3e-3, seed + 3 + i),
                               xte, yte))
        # The same number of gradient steps for both: the labelled set is 1/labelled times smaller.
        t_hard.append(accuracy(train(start, xtr[lab], ytr[lab], hard_loss, int(20 / labelled), 3e-3, seed + 3 + i), xte, yte))
        t_kd.append(accuracy(train(start, xtr, ytr, soft_loss(t_logits), 20, 3e-3, seed + 3 + i), xte, yte))
    if full_data_small:
        res.small_hard, res.small_kd = float(np.mean(hard)), float(np.mean(kd))
    res.transfer_hard, res.transfer_kd = float(np.mean(t_hard)), float(np.mean(t_kd))
    return res


def main() -> None:
    res = run()
    print(f"{'model':<22}{'acc before':>12}{'acc after':>12}{'file bytes':>12}")
    print(f"{'teacher 64-128-64-10':<22}{'':>12}{res.teacher_acc:>11.2f}%{res.teacher_size:>12}")
    for r in res.rows:
        print(f"{'student ' + r.name:<22}{r.before:>11.2f}%{r.after:>11.2f}%{r.size:>12}")
    print(f"64-16-10 student, all labels (mean of 3 starts): hard labels only {res.small_hard:.2f}%, "
          f"distilled (T=2, alpha=0.5) {res.small_kd:.2f}%")
    print(f"64-16-10 student, 10% labelled (mean of 3 starts): hard labels only {res.transfer_hard:.2f}%, "
          f"distilled on the unlabelled transfer set (T=2) {res.transfer_kd:.2f}%")


if __name__ == "__main__":
    main()
