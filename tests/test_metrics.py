"""metrics.py against values worked out by hand (the arithmetic is in the comments): a class never predicted, a class
absent from the labels, perfect and all-wrong predictions, every integer dtype, and each kind of bad input."""
import re

import numpy as np
import pytest
import torch

from metrics import accuracy, confusion_matrix, precision_recall_f1

# 4 classes. Class 2 is never predicted; class 3 never occurs in y_true.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 0, 3, 1]


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    assert confusion_matrix(Y_TRUE, Y_PRED, 4).tolist() == [
        [2, 1, 0, 0],  # true 0: predicted 0, 0, 1
        [0, 2, 0, 0],  # true 1: predicted 1, 1
        [1, 1, 0, 1],  # true 2: predicted 0, 3, 1
        [0, 0, 0, 0],  # true 3: absent
    ]


def test_accuracy():
    assert accuracy(Y_TRUE, Y_PRED) == 4 / 8  # correct at positions 0, 1, 3, 4


def test_per_class_precision_recall_f1():
    # column sums (predicted) = [3, 4, 0, 1], row sums (support) = [3, 2, 3, 0], tp = [2, 2, 0, 0]
    precision, recall, f1 = precision_recall_f1(Y_TRUE, Y_PRED, 4, average=None)
    np.testing.assert_allclose(precision, [2 / 3, 2 / 4, 0, 0 / 1])  # class 2: 0/0 -> 0
    np.testing.assert_allclose(recall, [2 / 3, 2 / 2, 0 / 3, 0])  # class 3: 0/0 -> 0
    # F1 = 2tp / (predicted + support): [4/6, 4/6, 0/3, 0/1]; class 1 check: 2 * 0.5 * 1 / 1.5 = 2/3
    np.testing.assert_allclose(f1, [2 / 3, 2 / 3, 0, 0])


def test_weighted_average_weights_by_true_support():
    # supports 3, 2, 3, 0 over 8 samples
    p, r, f = precision_recall_f1(Y_TRUE, Y_PRED, 4)
    assert p == pytest.approx((3 * 2 / 3 + 2 * 0.5) / 8)  # 3/8
    assert r == pytest.approx((3 * 2 / 3 + 2 * 1) / 8)  # 1/2, which equals the accuracy
    assert f == pytest.approx((3 * 2 / 3 + 2 * 2 / 3) / 8)  # 5/12


def test_macro_average_counts_every_class_equally():
    p, r, f = precision_recall_f1(Y_TRUE, Y_PRED, 4, average="macro")
    assert p == pytest.approx((2 / 3 + 1 / 2 + 0 + 0) / 4)  # 7/24
    assert r == pytest.approx((2 / 3 + 1 + 0 + 0) / 4)  # 5/12
    assert f == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)  # 1/3


def test_perfect_predictions():
    y = [0, 1, 2, 2]
    assert accuracy(y, y) == 1.0
    assert precision_recall_f1(y, y, 3) == (1.0, 1.0, 1.0)
    # With a 4th class that never occurs, the weighted average ignores it (weight 0) but macro counts it as 0.
    assert precision_recall_f1(y, y, 4) == (1.0, 1.0, 1.0)
    assert precision_recall_f1(y, y, 4, average="macro") == (0.75, 0.75, 0.75)


def test_all_wrong_predictions():
    assert accuracy([0, 1, 1], [1, 0, 0]) == 0.0
    assert confusion_matrix([0, 1, 1], [1, 0, 0], 2).tolist() == [[0, 1], [2, 0]]
    assert precision_recall_f1([0, 1, 1], [1, 0, 0], 2) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_any_integer_dtype_gives_the_same_answer(dtype):
    y_true, y_pred = np.array(Y_TRUE, dtype=dtype), np.array(Y_PRED, dtype=dtype)
    assert confusion_matrix(y_true, y_pred, 4).tolist() == confusion_matrix(Y_TRUE, Y_PRED, 4).tolist()
    assert precision_recall_f1(y_true, y_pred, 4) == precision_recall_f1(Y_TRUE, Y_PRED, 4)


def test_uint8_labels_do_not_overflow():
    # true * C + pred would wrap around in uint8 for C = 20: 19 * 20 + 19 = 399 > 255
    y = np.array([19, 19, 0], dtype=np.uint8)
    assert confusion_matrix(y, y, 20)[19, 19] == 2


@pytest.mark.parametrize("y_true, y_pred, message", [
    ([0, 1, 2], [0, 1], "differ in length"),
    ([], [], "empty"),
    ([0, 4], [0, 1], "outside [0, 4)"),
    ([0, 1], [-1, 1], "outside [0, 4)"),
    ([0.0, 1.0], [0, 1], "integer"),
    (["a", "b"], [0, 1], "integer"),
    ([True, False], [0, 1], "integer"),
    ([[0, 1]], [[0, 1]], "1-D"),
    (np.int64(1), np.int64(1), "1-D"),
])
def test_bad_input_raises_value_error(y_true, y_pred, message):
    for call in (lambda: confusion_matrix(y_true, y_pred, 4), lambda: precision_recall_f1(y_true, y_pred, 4)):
        with pytest.raises(ValueError, match=re.escape(message)):
            call()


@pytest.mark.parametrize("y_true, y_pred", [([0, 1, 2], [0, 1]), ([], []), ([0.5], [0]), ([[0]], [[0]])])
def test_accuracy_rejects_bad_input(y_true, y_pred):
    with pytest.raises(ValueError):
        accuracy(y_true, y_pred)


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True, "4"])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0, 1], [0, 1], num_classes)


def test_bad_average():
    with pytest.raises(ValueError, match="average"):
        precision_recall_f1([0, 1], [0, 1], 2, average="micro")


def test_cpu_tensors_and_lists_give_what_numpy_arrays_give():
    """What the module's docstring promises a copier: numpy arrays, lists or CPU tensors of labels alike."""
    y_true, y_pred = [0, 1, 2, 2, 1], [0, 2, 2, 2, 1]
    for kind in (np.array, list, torch.tensor):
        assert accuracy(kind(y_true), kind(y_pred)) == 0.8
        assert confusion_matrix(kind(y_true), kind(y_pred), 3).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]
