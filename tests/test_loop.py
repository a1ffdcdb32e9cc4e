import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import famr
from famr.config import OptimConfig
from famr.data.tensors import TensorBatches
from famr.loop import DivergenceError, Streams, optimise, select_parameters, set_train_mode
from famr.losses import cross_entropy
from famr.parts import EachStep, L2Anchor, StopWhen, UpdateMask

CPU = torch.device("cpu")


def _setup(batch=8):
    torch.manual_seed(0)
    model = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    x = torch.randn(24, 1, 6, 6)
    y = torch.arange(24) % 3
    batches = TensorBatches(x, y, batch, shuffle=True, generator=torch.Generator().manual_seed(0))

    def objective(b):
        images, labels = b["train"]
        loss = cross_entropy(model(images), labels)
        return {"loss": loss}

    return model, Streams("train", batches), objective


def test_select_head_picks_last_linear_only():
    model = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    names = [n for n, _ in select_parameters(model, "head")]
    assert names == ["classifier.weight", "classifier.bias"]
    assert len(select_parameters(model, "all")) == len(list(model.parameters()))
    assert [n for n, _ in select_parameters(model, r"features\.0\.")] == [
        "features.0.0.weight",
        "features.0.1.weight",
        "features.0.1.bias",
    ]


def test_last_stage_is_the_body_s_last_quarter_and_the_head():
    from famr.models.suffix import last_stage

    resnet = famr.create_model("resnet20", 10)
    assert last_stage(resnet) == ["layer3"]
    names = [n for n, _ in select_parameters(resnet, "last_stage")]
    assert names and all(n.startswith(("layer3.", "linear.")) for n in names)
    assert "linear.weight" in names and "layer3.2.conv2.weight" in names
    small = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    assert last_stage(small) == ["features.3"]
    torchvision = pytest.importorskip("torchvision")
    assert last_stage(torchvision.models.resnet18(num_classes=10)) == ["layer4"]
    with torch.device("meta"):  # shapes only: no weights drawn
        vgg = torchvision.models.vgg11(num_classes=10)
    assert last_stage(vgg) == ["classifier.0", "classifier.3"]  # beside the head, 93 % of it
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
        effnet = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)
    assert last_stage(vit) == ["blocks.8", "blocks.9", "blocks.10", "blocks.11", "norm"]
    assert last_stage(effnet) == ["blocks.6", "conv_head", "bn2"]
    # a larger share of the body: ResNet-20's last two stages (layer3 alone holds 77 %)
    assert last_stage(resnet, 0.9) == ["layer2", "layer3"]
    assert last_stage(vit, 0.9) == [*(f"blocks.{i}" for i in range(12)), "norm"]  # 11: 0.89
    deeper = {n for n, _ in select_parameters(resnet, "last_stage:0.9")}
    assert deeper == {
        n for n, _ in resnet.named_parameters() if n.startswith(("layer2.", "layer3.", "linear."))
    }
    with pytest.raises(ValueError, match="no parameterised stage"):
        last_stage(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_the_last_blocks_of_the_last_stage():
    """last_blocks:N: the last N blocks of the last stage (single layers after them and beside
    the head go with them, uncounted) and the head; all of them is the last stage; more than it
    has, or a stage of single layers, is a one-line error naming the spec and the choices."""
    import torchvision

    from famr.models.suffix import last_blocks

    resnet = famr.create_model("resnet20", 10)
    assert last_blocks(resnet, 2) == ["layer3.1", "layer3.2"]
    two = {n for n, _ in select_parameters(resnet, "last_blocks:2")}
    assert two == {
        n
        for n, _ in resnet.named_parameters()
        if n.startswith(("layer3.1.", "layer3.2.", "linear."))
    }
    stage = {n for n, _ in select_parameters(resnet, "last_stage")}
    assert {n for n, _ in select_parameters(resnet, "last_blocks:3")} == stage
    with pytest.raises(ValueError, match=r"'last_blocks:4'.*has 3 blocks \(layer3.0, layer3.1, "):
        select_parameters(resnet, "last_blocks:4")
    small = famr.create_model("small_cnn", 3, in_channels=1, width=4)  # conv, BN: no blocks
    with pytest.raises(ValueError, match=r"no blocks, only single layers \(features.3.0, "):
        select_parameters(small, "last_blocks:1")
    # a stage wrapped in a one-child container is entered
    wrapped = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.Sequential(
            nn.Sequential(*(nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()) for _ in "abc"))
        ),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert last_blocks(wrapped, 2) == ["1.0.1", "1.0.2"]
    with torch.device("meta"):
        resnet18 = torchvision.models.resnet18(num_classes=10)
        convnext = torchvision.models.convnext_tiny(num_classes=10)
    assert last_blocks(resnet18, 1) == ["layer4.1"]
    # the head's norm goes with the blocks, not counted as one
    assert last_blocks(convnext, 1) == ["features.7.2", "classifier.0"]
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
        timm_convnext = timm.create_model("convnext_tiny", pretrained=False, num_classes=10)
    assert last_blocks(vit, 1) == ["blocks.11", "norm"]  # the final norm goes with the block
    # the stage's blocks container (beside its small downsampling layer) is entered
    assert last_blocks(timm_convnext, 2) == ["stages.3.blocks.1", "stages.3.blocks.2", "head.norm"]


def test_the_last_stage_but_its_first_block():
    """last_stage_but_first: every block of the last stage but the first (ResNet-20: the
    validation study's last_blocks:2), and the whole stage where it has fewer than two blocks
    to keep one of (small_cnn's single layers), the head with them either way."""
    import torchvision

    from famr.models.suffix import last_blocks, last_stage, last_stage_but_first

    resnet = famr.create_model("resnet20", 10)
    assert last_stage_but_first(resnet) == ["layer3.1", "layer3.2"]
    wrapped = nn.Sequential(resnet)  # a wrapper whose one child is the model is entered
    assert last_stage_but_first(wrapped) == ["0.layer3.1", "0.layer3.2"]
    assert last_blocks(wrapped, 1) == ["0.layer3.2"]
    tail = {n for n, _ in select_parameters(resnet, "last_stage_but_first")}
    assert tail == {n for n, _ in select_parameters(resnet, "last_blocks:2")}
    small = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    assert last_stage_but_first(small) == last_stage(small) == ["features.3"]
    tail = {n for n, _ in select_parameters(small, "last_stage_but_first")}
    assert tail == {n for n, _ in select_parameters(small, "last_stage")}
    one_block = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert last_stage_but_first(one_block) == last_stage(one_block)
    with torch.device("meta"):
        resnet18 = torchvision.models.resnet18(num_classes=10)
    assert last_stage_but_first(resnet18) == ["layer4.1"]
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    assert last_stage_but_first(vit) == ["blocks.9", "blocks.10", "blocks.11", "norm"]
    assert famr.config.OptimConfig(params="last_stage_but_first").params == "last_stage_but_first"


def test_reinitialise_redraws_the_modules_and_their_statistics():
    from famr.models.suffix import reinitialise

    model = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    bn = model.features[3][1]
    bn.running_mean.fill_(5.0)
    with torch.no_grad():
        bn.weight.fill_(2.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = [n for n, _ in select_parameters(model, "last_stage")]
    owners = reinitialise(model, names)
    assert owners == ["classifier", "features.3.0", "features.3.1"]
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    # the BatchNorm's bias was already at its initial 0
    assert changed == {
        "features.3.0.weight",
        "features.3.1.weight",
        "classifier.weight",
        "classifier.bias",
    }
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert all(torch.equal(before[n], after[n]) for n in before if n not in names)
    model.classifier.bias.requires_grad_(False)  # a module half frozen is never redrawn
    with pytest.raises(ValueError, match="frozen parameters \\['bias'\\]"):
        reinitialise(model, ["classifier.weight"])


@pytest.mark.parametrize(
    "spec",
    [
        "nomatch",
        "(",
        "last_stage:0",
        "last_stage:1.5",
        "last_stage:x",
        "last_blocks:0",
        "last_blocks:x",
        "last_blocks:02",  # one spelling per count (the study keys configurations by it)
        "last_blocks:\u00b2",  # a superscript two: str.isdigit() says yes, int() fails
        "last_blocks:\u0662",  # an Arabic-Indic two
    ],
)
def test_select_bad_spec_names_the_value(spec):
    model = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    with pytest.raises(ValueError, match="params="):
        select_parameters(model, spec)


def test_head_only_leaves_other_parameters_bit_identical():
    model, streams, objective = _setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimise(model, objective, streams, OptimConfig(epochs=2, params="head"), device=CPU)
    for n, p in model.named_parameters():
        same = torch.equal(p, before[n])
        assert same == (not n.startswith("classifier")), n


def test_batchnorm_eval_mode_keeps_running_statistics():
    model, streams, objective = _setup()
    stats = {n: b.clone() for n, b in model.named_buffers()}
    optimise(model, objective, streams, OptimConfig(epochs=1, batchnorm="eval"), device=CPU)
    for n, b in model.named_buffers():
        assert torch.equal(b, stats[n]), n
    optimise(model, objective, streams, OptimConfig(epochs=1, batchnorm="train"), device=CPU)
    assert any(
        not torch.equal(b, stats[n]) for n, b in model.named_buffers() if "running_mean" in n
    )


def test_set_train_mode():
    model = famr.create_model("small_cnn", 3, in_channels=1, width=4)
    set_train_mode(model, "eval")
    assert model.training
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_update_mask_holds_against_momentum_and_weight_decay():
    model, streams, objective = _setup()
    weight = dict(model.named_parameters())["classifier.weight"]
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask[0] = True  # only the first row may move
    before = weight.detach().clone()
    cfg = OptimConfig(epochs=3, params="head", momentum=0.9, weight_decay=0.1, lr=0.1)
    parts = [UpdateMask({"classifier.weight": mask})]
    optimise(model, objective, streams, cfg, device=CPU, parts=parts)
    assert torch.equal(weight[1:], before[1:])
    assert not torch.equal(weight[0], before[0])


def test_anchor_history_records_objective_and_distance():
    model, streams, objective = _setup()
    history = optimise(
        model, objective, streams, OptimConfig(epochs=2), device=CPU, parts=[L2Anchor(2.0)]
    )
    assert len(history) == 2
    last = history[-1]
    assert last["anchor"] == pytest.approx(0.5 * 2.0 * last["distance"] ** 2)
    assert last["objective"] == pytest.approx(last["loss"] + last["anchor"])


def test_max_steps_caps_the_run_and_progress_reports_each_step():
    model, streams, objective = _setup(batch=8)  # 3 steps per epoch
    calls = []
    optimise(
        model,
        objective,
        streams,
        OptimConfig(epochs=5, max_steps=4),
        device=CPU,
        progress=lambda s, t: calls.append((s, t)),
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_divergence_raises_with_the_step():
    model, streams, _ = _setup()

    def objective(b):
        images, _ = b["train"]
        return {"loss": model(images).sum() * float("nan")}

    with pytest.raises(DivergenceError, match="step 1"):
        optimise(model, objective, streams, OptimConfig(epochs=1), device=CPU)


def test_requires_grad_flags_are_restored():
    model, streams, objective = _setup()
    dict(model.named_parameters())["features.0.0.weight"].requires_grad_(False)
    optimise(model, objective, streams, OptimConfig(epochs=1, params="head"), device=CPU)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert flags.pop("features.0.0.weight") is False
    assert all(flags.values())


def test_schedules_known_values():
    from famr.loop import _schedule

    cosine = _schedule("cosine", 10)
    assert (
        cosine(0) == pytest.approx(1.0)
        and cosine(5) == pytest.approx(0.5)
        and cosine(10) == pytest.approx(0.0)
    )
    onecycle = _schedule("onecycle", 10)  # 2 warm-up steps, then linear to zero
    assert [onecycle(s) for s in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    assert _schedule("constant", 10)(7) == 1.0


def test_crop_flip_preserves_content_and_varies_per_image():
    from famr.data.tensors import crop_flip

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    for i in range(2):  # with no padding each image is itself or its mirror
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    big = torch.rand(64, 1, 8, 8)
    shifted = crop_flip(big, torch.Generator().manual_seed(1), padding=2)
    assert shifted.shape == big.shape
    assert sum(torch.equal(a, b) for a, b in zip(shifted, big, strict=True)) < 16


def test_to_tensors_rejects_empty_dataset():
    from famr.data.tensors import to_tensors

    with pytest.raises(ValueError, match="empty"):
        to_tensors(
            TensorDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long)), name="forget"
        )


def test_a_compile_failure_is_one_line_that_says_what_to_do(tiny, monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    model, forget, _ = tiny

    def broken_compile(self, *args, **kwargs):
        def call(*a, **k):
            inner = RuntimeError("C++ compile error\n/tmp/x.cpp:28: error: 'at::vec' ...")
            raise BackendCompilerFailed(lambda: None, inner, None)

        self._compiled_call_impl = call

    monkeypatch.setattr(torch.nn.Module, "compile", broken_compile)
    with pytest.raises(ValueError, match="compile=True failed .*RuntimeError: C.. compile") as err:
        famr.unlearn(model, forget, method="famr_literal", compile=True, certificate=False)
    assert "\n" not in str(err.value) and str(err.value).endswith("run with compile=false")


def test_parts_compose_in_order_and_a_rule_stops_the_run():
    """The loop's parts (famr.parts): a schedule sees every step before it runs, a stopping
    rule ends the run after its step, and the anchor and the mask compose (the mask wins)."""
    model, streams, objective = _setup(batch=8)  # 3 steps per epoch
    seen = []
    weight = dict(model.named_parameters())["classifier.weight"]
    frozen_row = weight[1].detach().clone()
    mask = torch.ones_like(weight, dtype=torch.bool)
    mask[1] = False
    history = optimise(
        model,
        objective,
        streams,
        OptimConfig(epochs=4, params="head"),
        device=CPU,
        parts=[
            EachStep(lambda step, total: seen.append((step, total))),
            L2Anchor(1.0),
            UpdateMask({"classifier.weight": mask}),
            StopWhen(lambda step: step == 5),
        ],
    )
    assert seen == [(s, 12) for s in range(5)]
    assert history[-1]["stopped_at"] == 5 and len(history) == 2
    assert torch.equal(weight[1], frozen_row) and "anchor" in history[-1]


def test_batchnorm_moved_trains_only_the_moving_layers_statistics():
    """``batchnorm="moved"``: the BatchNorm layers whose parameters move learn their running
    statistics; every other one keeps the original's, bit for bit."""
    model, streams, objective = _setup()
    stats = {n: b.clone() for n, b in model.named_buffers()}
    moving = r"^features\.3\."  # the last conv-BN block of small_cnn
    cfg = OptimConfig(epochs=1, batchnorm="moved", params=moving)
    optimise(model, objective, streams, cfg, device=CPU)
    changed = {n for n, b in model.named_buffers() if not torch.equal(b, stats[n])}
    assert changed, "the moving block's statistics did not change"
    assert all(n.startswith("features.3.") for n in changed), sorted(changed)
    assert not model.training  # handed back in eval mode
