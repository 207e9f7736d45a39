"""fedfraud.scoring.Scorer: live scores equal the full model on history + new rows; thresholds,
quantization and bad inputs."""

import numpy as np
import pandas as pd
import pytest
import torch

from fedfraud.data.features import build_bank_table
from fedfraud.errors import DataError, FedfraudError
from fedfraud.run_model import load_run_model
from fedfraud.scoring import Scorer, choose_threshold, read_transactions
from fedfraud.train import make_inputs
from tests.serving.conftest import bank_frame, make_run, write_bank
from tests.serving.test_online_features import new_transactions


def full_model_probability(run, frame: pd.DataFrame) -> float:
    """The newest row's probability from the model over the whole table, every row in the
    training split so that the GNN's graph holds every edge up to and including the newest
    (what the live scorer sees; the evaluation graphs of a temporal split are older)."""
    model, card = load_run_model(run)
    table = build_bank_table(
        frame.assign(_split=0), "b", with_graph=card.model == "gnn", split_column="_split"
    )
    inputs = make_inputs(card.model, table, card.scaler)
    with torch.no_grad():
        logits = model(inputs.graph) if card.model == "gnn" else model(inputs.x)
    return float(torch.sigmoid(logits[-1]))


@pytest.mark.parametrize("model, conv", [("mlp", "sage"), ("gnn", "sage"), ("gnn", "gcn")])
def test_live_score_equals_full_model_on_history_plus_transaction(tmp_path, model, conv):
    history = bank_frame()
    run = make_run(tmp_path / "run", history, model, conv)
    scorer = Scorer(run, write_bank(tmp_path / "banks", history))
    new = new_transactions(history)
    for k, record in enumerate(new.drop(columns="is_fraud").to_dict("records")):
        live = scorer.score(record).probability
        full = full_model_probability(run, pd.concat([history, new.iloc[: k + 1]]))
        assert live == pytest.approx(full, rel=1e-4, abs=1e-6), k


def test_threshold_keeps_validation_fpr_at_or_below_target():
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.05).astype(int)
    scores = rng.random(5000) * 0.7 + 0.3 * y
    for target in (0.001, 0.01, 0.1):
        t = choose_threshold(y, scores, target)
        assert t.val_fpr <= target
        assert (scores[y == 0] > t.value).mean() == t.val_fpr
    assert choose_threshold(y, scores, 0.1).value < choose_threshold(y, scores, 0.01).value


def test_threshold_needs_legitimate_validation_rows():
    with pytest.raises(DataError, match="no legitimate"):
        choose_threshold(np.ones(10), np.ones(10), 0.01)


def test_scorer_reports_threshold_on_the_banks_validation_split(mlp_setup):
    run, bank, _ = mlp_setup
    info = Scorer(run, bank, target_fpr=0.05).info()
    assert info["bank"] == "bank-00" and info["model"] == "mlp"
    assert info["validation"]["fpr"] <= 0.05 and info["validation"]["legit"] > 100
    assert info["history_transactions"] == 1350


def test_score_frame_scores_in_time_order_and_returns_input_order(mlp_setup):
    run, bank, new = mlp_setup
    shuffled = new.sample(frac=1.0, random_state=0)
    scored = Scorer(run, bank).score_frame(shuffled)
    assert list(scored.index) == list(shuffled.index)
    one_by_one = Scorer(run, bank).score_records(new.to_dict("records"))
    expected = pd.Series([d.probability for d in one_by_one], index=new.index)
    np.testing.assert_allclose(scored["fraud_probability"], expected[shuffled.index], rtol=1e-6)
    assert set(scored["decision"]) <= {"alert", "pass"}


def test_int8_quantized_mlp_stays_close_to_fp32(mlp_setup):
    run, bank, new = mlp_setup
    records = new.to_dict("records")
    fp32 = [d.probability for d in Scorer(run, bank).score_records(records)]
    int8 = [d.probability for d in Scorer(run, bank, quantized=True).score_records(records)]
    assert np.max(np.abs(np.array(fp32) - np.array(int8))) < 0.05
    assert Scorer(run, bank, quantized=True).quantized


def test_quantize_is_refused_for_the_gnn(tmp_path):
    history = bank_frame()
    run = make_run(tmp_path / "run", history, "gnn", epochs=1)
    with pytest.raises(FedfraudError, match="MLP only"):
        Scorer(run, write_bank(tmp_path / "banks", history), quantized=True)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 2.0])
def test_target_fpr_outside_zero_one_is_refused(mlp_setup, target):
    run, bank, _ = mlp_setup
    with pytest.raises(FedfraudError, match="target-fpr"):
        Scorer(run, bank, target_fpr=target)


def test_a_consortium_folder_is_refused_with_a_bank_folder_hint(mlp_setup):
    run, bank, _ = mlp_setup
    with pytest.raises(DataError, match="bank-00"):
        Scorer(run, bank.parent)


def test_run_folder_without_model_card_is_refused(mlp_setup):
    run, bank, _ = mlp_setup
    (run / "model.json").unlink()
    with pytest.raises(FedfraudError, match="model.json not found"):
        Scorer(run, bank)


def test_model_weights_of_another_architecture_are_refused(mlp_setup, tmp_path):
    run, bank, _ = mlp_setup
    torch.save({"net.0.weight": torch.zeros(2, 2)}, run / "model.pt")
    with pytest.raises(FedfraudError, match="does not match"):
        Scorer(run, bank)


def test_bank_data_without_the_models_features_is_refused(mlp_setup, tmp_path):
    run, _, _ = mlp_setup
    no_accounts = bank_frame().drop(columns=["sender", "receiver"])
    with pytest.raises(DataError, match="other features"):
        Scorer(run, write_bank(tmp_path / "other", no_accounts))


def test_transactions_file_must_be_csv_or_parquet(tmp_path):
    (tmp_path / "tx.json").write_text("{}")
    with pytest.raises(DataError, match=".csv or .parquet"):
        read_transactions(tmp_path / "tx.json")
    with pytest.raises(DataError, match="not found"):
        read_transactions(tmp_path / "missing.csv")
