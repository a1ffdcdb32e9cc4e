import pytest
import torch
from torch.utils.data import TensorDataset

import famr
from famr.metrics import METRICS, SplitOutputs
from famr.metrics.gaps import gaps
from famr.metrics.mia import svc_mia_efficacy


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_documents_direction_and_retrain_value(name):
    meta = METRICS.get(name).meta
    assert meta["direction"] and meta["retrain"] and meta["splits"]


def _outputs(logits, labels):
    return SplitOutputs(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))


def test_accuracy_metrics_known_answer():
    out = {
        "forget": _outputs(
            [[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]], [0, 0, 0, 0]
        ),  # 1 of 4
        "retain": _outputs([[0.0, 1.0], [1.0, 0.0]], [1, 0]),  # 2 of 2
    }
    assert METRICS.get("forget_acc").obj(out) == pytest.approx(25.0)
    assert METRICS.get("ua").obj(out) == pytest.approx(75.0)
    assert METRICS.get("retain_acc").obj(out) == pytest.approx(100.0)


def test_true_label_confidence_known_answer():
    out = _outputs([[0.0, 0.0], [0.0, 100.0]], [0, 1])
    torch.testing.assert_close(out.true_label_confidence, torch.tensor([0.5, 1.0]))


def test_svc_mia_on_separable_distributions():
    g = torch.Generator().manual_seed(0)
    members = 0.95 + 0.05 * torch.rand(300, generator=g)
    non_members = 0.05 * torch.rand(300, generator=g)
    # targets that look like non-members are all called non-member, member-like ones none
    assert svc_mia_efficacy(members, non_members, 0.05 * torch.rand(50, generator=g)) == 100.0
    assert svc_mia_efficacy(members, non_members, 0.95 + 0.05 * torch.rand(50, generator=g)) == 0.0


@pytest.mark.science
def test_svc_mia_on_identical_distributions_is_near_chance_or_constant():
    g = torch.Generator().manual_seed(0)
    members = torch.rand(400, generator=g)
    non_members = torch.rand(400, generator=g)
    targets = torch.rand(400, generator=g)
    score = svc_mia_efficacy(members, non_members, targets)
    # nothing separates the classes: the attacker cannot do much better than a coin
    assert 20.0 <= score <= 80.0 or score in (0.0, 100.0)


def test_svc_mia_subsamples_members_to_the_number_of_non_members():
    # 1000 members at 1.0, 10 non-members at 0.0: without subsampling the SVC would still
    # separate them; the score must be defined and deterministic for a fixed seed
    members = torch.ones(1000)
    non_members = torch.zeros(10)
    targets = torch.tensor([0.0, 1.0])
    assert svc_mia_efficacy(members, non_members, targets, seed=1) == 50.0


def test_gaps_and_tow_known_answer():
    run = {
        "ua": 90.0,
        "forget_acc": 10.0,
        "retain_acc": 95.0,
        "test_retain_acc": 90.0,
        "mia_efficacy": 80.0,
    }
    ref = {
        "ua": 100.0,
        "forget_acc": 0.0,
        "retain_acc": 100.0,
        "test_retain_acc": 92.0,
        "mia_efficacy": 100.0,
    }
    out = gaps(run, ref)
    assert (
        out["ua_gap"] == 10.0
        and out["ra_gap"] == 5.0
        and out["ta_gap"] == 2.0
        and out["mia_gap"] == 20.0
    )
    assert out["avg_gap"] == pytest.approx((10 + 5 + 2 + 20) / 4)
    assert out["tow"] == pytest.approx(0.9 * 0.95 * 0.98)
    same = gaps(ref, ref)
    assert same["avg_gap"] == 0.0 and same["tow"] == 1.0


def test_evaluate_on_a_hand_built_model():
    # a "model" that always predicts class 1
    class Always1(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([[0.0, 5.0]]).expand(len(x), 2) + 0 * self.w

    forget = TensorDataset(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
    retain = TensorDataset(torch.zeros(6, 1, 2, 2), torch.tensor([1, 1, 1, 0, 0, 0]))
    result = famr.evaluate(
        Always1(), forget=forget, retain=retain, metrics=["forget_acc", "retain_acc", "ua"]
    )
    assert result == {"forget_acc": 0.0, "retain_acc": 50.0, "ua": 100.0}


def test_evaluate_refuses_a_metric_without_its_split():
    model = famr.create_model("small_cnn", 2, in_channels=1, width=4)
    forget = TensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="mia_efficacy.*needs"):
        famr.evaluate(model, forget=forget, metrics=["mia_efficacy"])
    with pytest.raises(ValueError, match="unknown metric"):
        famr.evaluate(model, forget=forget, metrics=["accuracy"])
