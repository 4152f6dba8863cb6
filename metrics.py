"""Classification metrics in plain numpy: confusion matrix, accuracy, precision/recall/F1.

Same definitions as scikit-learn's precision_recall_fscore_support with labels=range(num_classes) and
zero_division=0: a 0/0 counts as 0. y_true, y_pred: 1-D integer labels, as numpy arrays, lists or CPU tensors
(np.asarray reads each; a GPU tensor needs .cpu() first).
"""
import numpy as np


def _check(y_true, y_pred, num_classes=None):
    """The two label arrays as 1-D integer numpy arrays of one length, within [0, num_classes); else ValueError."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("y_true and y_pred are empty")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        for name, y in (("y_true", y_true), ("y_pred", y_pred)):
            if y.min() < 0 or y.max() >= num_classes:
                raise ValueError(f"{name} has labels outside [0, {num_classes}): min {y.min()}, max {y.max()}")
    return y_true, y_pred


def confusion_matrix(y_true, y_pred, num_classes):
    """(num_classes, num_classes) int array: [i, j] counts samples of true class i predicted as j."""
    y_true, y_pred = _check(y_true, y_pred, num_classes)
    # One bincount over the flat index true * C + pred; int64 so that uint8 labels cannot overflow.
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(y_true, y_pred):
    """Fraction of predictions equal to the true label."""
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def precision_recall_f1(y_true, y_pred, num_classes, average="weighted"):
    """(precision, recall, f1): floats averaged as "weighted" (by true support) or "macro",
    or per-class arrays of length num_classes when average is None."""
    if average not in ("weighted", "macro", None):
        raise ValueError(f'average must be "weighted", "macro" or None, got {average!r}')
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp, predicted, support = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)  # predicted: tp + fp; support: tp + fn

    def divide(numerator, denominator):  # 0 where the denominator is 0 (zero_division=0)
        return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator != 0)
    # F1 = 2PR / (P + R) written in counts, so a class with P or R of 0/0 still gets a defined F1.
    precision, recall, f1 = divide(tp, predicted), divide(tp, support), divide(2 * tp, predicted + support)
    if average is None:
        return precision, recall, f1
    weights = support if average == "weighted" else np.ones(num_classes)
    return tuple(float(np.average(m, weights=weights)) for m in (precision, recall, f1))
