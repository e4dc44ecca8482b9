import numpy as np
import pytest

from bilstm_cli.evaluate import classification_report, log_loss


def test_metrics_match_hand_computed_values():
    # true:  a a a b b c ; predicted: a a b b c c
    labels = ["a", "b", "c"]
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], labels)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (report["per_class"][k] for k in labels)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert a["f1"] == pytest.approx(0.8)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    assert c["f1"] == pytest.approx(2 / 3)
    assert report["macro_avg"]["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report["macro_avg"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["weighted_avg"]["recall"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1) / 6)
    assert report["weighted_avg"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)


def test_class_never_predicted_scores_zero_like_sklearn():
    report = classification_report([0, 1, 1], [0, 0, 0], ["x", "y"])
    assert report["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                        "support": 2}
    assert report["per_class"]["x"]["precision"] == pytest.approx(1 / 3)


def test_log_loss():
    probabilities = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert log_loss([0, 1], probabilities) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)


def test_training_data_warning_names_builtin_training_split(tmp_path):
    from bilstm_cli.runs import run_data_section, training_data_warning

    (tmp_path / "config.yaml").write_text("data:\n  dataset: imdb\n  train: null\n")
    section = run_data_section(tmp_path)
    warning = training_data_warning(section, "imdb:train")
    assert warning is not None
    assert "trained on (data.dataset: imdb)" in warning and "test data is imdb:test" in warning
    assert training_data_warning(section, "imdb:test") is None
    assert training_data_warning(section, "sst2:train") is None
    assert training_data_warning(section, "-") is None
    assert training_data_warning(section, str(tmp_path / "missing.tsv")) is None
    assert training_data_warning(run_data_section(tmp_path / "no-run"), "imdb:train") is None
