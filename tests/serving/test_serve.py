"""The HTTP scoring service (FastAPI TestClient, in process)."""

import pytest
from fastapi.testclient import TestClient

from fedfraud.scoring import Scorer
from fedfraud.serve import create_app


@pytest.fixture
def service(mlp_setup):
    run, bank, new = mlp_setup
    scorer = Scorer(run, bank)
    records = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items() if k != "is_fraud"}
        for r in new.to_dict("records")
    ]
    return TestClient(create_app(scorer, auth=None)), scorer, records


def test_health_describes_model_and_threshold(service):
    client, scorer, _ = service
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"] == "mlp" and body["bank"] == "bank-00"
    assert body["threshold"] == scorer.threshold.value and body["target_fpr"] == 0.01


def test_score_answers_probability_and_decision_like_the_scorer(service, mlp_setup):
    client, scorer, records = service
    run, bank, _ = mlp_setup
    reference = Scorer(run, bank)
    for record in records[:20]:
        body = client.post("/score", json=record).json()
        expected = reference.score(record)
        assert body["fraud_probability"] == pytest.approx(expected.probability, rel=1e-6)
        assert body["decision"] == ("alert" if expected.alert else "pass")
        assert body["threshold"] == scorer.threshold.value


def test_batch_scores_every_transaction_in_order_echoing_ids(service):
    client, scorer, records = service
    before = scorer.history.size
    batch = [{**r, "tx_id": f"t{i}"} for i, r in enumerate(records[:4])] + [records[4]]
    body = client.post("/score/batch", json=batch).json()
    assert len(body) == 5 and all(0 <= b["fraud_probability"] <= 1 for b in body)
    assert [b["tx_id"] for b in body] == ["t0", "t1", "t2", "t3", None]
    assert scorer.history.size == before + 5
    assert client.post("/score", json={**records[5], "id": 77}).json()["tx_id"] == 77


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"amount": -3}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"timestamp": None}, "timestamp"),
        ({"sender": None}, "missing sender"),
    ],
)
def test_bad_transaction_is_422_naming_the_field(service, change, fragment):
    client, scorer, records = service
    before = scorer.history.size
    response = client.post("/score", json={**records[0], **change})
    assert response.status_code == 422
    assert fragment in response.text
    assert scorer.history.size == before  # nothing joined the history


def test_a_bad_item_leaves_the_whole_batch_unscored(service):
    client, scorer, records = service
    before = scorer.history.size
    bad = {k: v for k, v in records[1].items() if k != "receiver"}
    response = client.post("/score/batch", json=[records[0], bad, records[2]])
    assert response.status_code == 422 and "transaction 1" in response.text
    assert scorer.history.size == before


def test_non_json_body_is_422(service):
    client, _, _ = service
    response = client.post(
        "/score", content=b"not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
