"""The head-only fast path gives the same result as full forward passes."""

import pytest
import torch
from torch import nn

import famr
from famr.methods.famr import FamrHeadConfig
from famr.methods.head import can_cache, head_inputs


@pytest.mark.parametrize("method", ["famr", "famr_retain"])
def test_cached_features_equal_full_forward(tiny, method):
    model, forget, retain = tiny
    kwargs = {"params": "head", "epochs": 3, "lr": 0.01, "batch_size": 8}
    if method == "famr":  # its no-retain recipe (the retain set given would select last_stage)
        kwargs["recipe"] = "head"
    fast = famr.unlearn(model, forget, retain, method=method, cache_features=True, **kwargs)
    slow = famr.unlearn(model, forget, retain, method=method, cache_features=False, **kwargs)
    for (name, p), q in zip(fast.model.named_parameters(), slow.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert fast.history[-1]["uniform_loss"] == pytest.approx(
        slow.history[-1]["uniform_loss"], rel=1e-5
    )
    if fast.certificate is not None:
        assert fast.certificate["distance"] == pytest.approx(slow.certificate["distance"], rel=1e-5)


@pytest.mark.parametrize("method", ["famr", "famr_retain", "famr_newton"])
def test_fast_path_is_taken_and_runs_the_body_once_per_image(tiny, method):
    model, forget, retain = tiny
    calls = []

    def count(module, inputs, output):
        calls.append(len(inputs[0]))

    handle = model.features.register_forward_hook(count)
    try:
        famr.unlearn(
            model,
            forget,
            retain,
            method=method,
            params="head",
            epochs=5,
            certificate=False,
            **({"buffer_size": 8} if method == "famr_retain" else {}),
            **({"recipe": "head"} if method == "famr" else {}),
        )
    finally:
        handle.remove()
    # the deep copy inside unlearn carries the hook: one pass over the forget set (+ buffer),
    # one probe of 8 images and the K-probe forward, never one pass per step
    per_image = len(forget) + (8 if method == "famr_retain" else 0)
    assert sum(calls) <= per_image + 8 + 1, calls


def test_fast_path_conditions():
    model = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    cfg = FamrHeadConfig  # famr's no-retain recipe
    assert can_cache(model, cfg())
    assert not can_cache(model, cfg(params="all"))
    assert not can_cache(model, cfg(augment="crop_flip"))
    assert not can_cache(model, cfg(batchnorm="train"))
    dropout = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3))
    assert not can_cache(dropout, cfg())


def test_head_inputs_are_the_penultimate_features():
    model = famr.create_model("small_cnn", 3, in_channels=1, width=4).eval()
    x = torch.randn(5, 1, 6, 6)
    features = head_inputs(model, model.classifier, x, batch_size=2)
    torch.testing.assert_close(model.classifier(features), model(x))


def test_model_with_an_operation_after_the_head_uses_full_forward(tiny):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Flatten()
            self.classifier = nn.Linear(32, 4)

        def forward(self, x):
            return 3.0 * self.classifier(self.body(x))

    _, forget, _ = tiny
    torch.manual_seed(0)
    model = Scaled()
    fast = famr.unlearn(model, forget, cache_features=True, epochs=2, forget_classes=[0])
    slow = famr.unlearn(model, forget, cache_features=False, epochs=2, forget_classes=[0])
    torch.testing.assert_close(fast.model.classifier.weight, slow.model.classifier.weight)
