"""ImageFolder data, torchvision / timm models, and data-parallel runs under torchrun."""

from __future__ import annotations

import contextlib
import io as stdio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import famr
from famr import io
from famr.cli import main

TINY_IMAGENET = Path(__file__).resolve().parents[2] / "shared/data/tiny-imagenet-200-sub10"


def _run(argv):
    out, err = stdio.StringIO(), stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _tree(root: Path, classes=("b_dog", "a_cat", "c_owl"), per_class=4, size=(40, 30)):
    """A small ImageFolder tree of solid-colour PNGs (class k has red = 40 * (k + 1))."""
    from PIL import Image

    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            red = 40 * (sorted(classes).index(name) + 1)
            for i in range(per_class if split == "train" else 2):
                Image.new("RGB", size, (red, 10 * i, 200)).save(folder / f"{i}.png")
    return root


def test_imagefolder_layout_labels_and_pixels(tmp_path):
    root = _tree(tmp_path / "tree", size=(24, 24))
    data = famr.load_dataset("imagefolder", root, workers=0)
    assert data.class_names == ["a_cat", "b_dog", "c_owl"]  # sorted, as ImageFolder numbers them
    images, labels = data.train.tensors
    assert images.dtype == torch.uint8 and images.shape == (12, 3, 24, 24)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # native size: no resampling, the pixels are exact
    assert images[5, 0].unique().tolist() == [80] and images[5, 1].unique().tolist() == [10]
    assert data.test.tensors[0].shape == (6, 3, 24, 24) and data.mean is not None


def test_imagefolder_resize_and_crop(tmp_path):
    root = _tree(tmp_path / "tree", size=(40, 30))
    data = famr.load_dataset("imagefolder", root, image_size=16, workers=2)
    assert data.train.tensors[0].shape == (12, 3, 16, 16)
    assert data.image_size == 16


def test_imagefolder_classes_file(tmp_path):
    root = _tree(tmp_path / "tree")
    listing = tmp_path / "classes.txt"
    listing.write_text("# two of three\nc_owl\na_cat  extra words ignored\n\n")
    data = famr.load_dataset("imagefolder", root, classes_file=listing, image_size=24, workers=0)
    assert data.class_names == ["a_cat", "c_owl"] and len(data.train) == 8


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("no_val", "lacks val/"),
        ("missing_root", "does not exist"),
        ("bad_class", "have no folder"),
        ("corrupt", "unreadable image"),
        ("too_big", "over max_preload_gib"),
        ("bad_option", "takes no option"),
    ],
)
def test_imagefolder_bad_input(tmp_path, setup, match):
    root = _tree(tmp_path / "tree", size=(24, 24))
    options = {"workers": 0}
    if setup == "no_val":
        import shutil

        shutil.rmtree(root / "val")
    elif setup == "missing_root":
        root = tmp_path / "nowhere"
    elif setup == "bad_class":
        (tmp_path / "c.txt").write_text("a_cat\nzebra\n")
        options["classes_file"] = tmp_path / "c.txt"
    elif setup == "corrupt":
        (root / "train" / "b_dog" / "9.png").write_bytes(b"\x89PNG not really")
    elif setup == "too_big":
        options["max_preload_gib"] = 1e-9
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        if setup == "bad_option":
            famr.load_dataset("digits", None, image_size=8)
        famr.load_dataset("imagefolder", root, **options)
    if setup == "corrupt":
        assert "9.png" in str(info.value)


def test_unreadable_image_is_a_one_line_cli_error(tmp_path):
    root = _tree(tmp_path / "tree", size=(24, 24))
    (root / "val" / "a_cat" / "broken.png").write_bytes(b"junk")
    out = tmp_path / "m.safetensors"
    argv = ["train", "--data", "imagefolder", "--data-root", str(root), "--out", str(out)]
    code, _, err = _run([*argv, "--workers", "0", "--quiet"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "broken.png" in err
    assert not out.exists()


@pytest.mark.skipif(not TINY_IMAGENET.is_dir(), reason="shared Tiny-ImageNet subset not present")
def test_tiny_imagenet_subset():
    data = famr.load_dataset("imagefolder", TINY_IMAGENET)
    assert data.train.tensors[0].shape == (5000, 3, 64, 64)
    assert data.test.tensors[0].shape == (500, 3, 64, 64)
    assert data.train.tensors[1].bincount().tolist() == [500] * 10
    assert data.class_names == sorted(data.class_names) and data.class_names[0] == "n01443537"


# --- torchvision and timm models ------------------------------------------------------------


def test_torchvision_model_by_name_and_its_head():
    pytest.importorskip("torchvision")
    from famr.loop import head_name

    model = famr.create_model("torchvision:resnet18", 7, mean=[0.5] * 3, std=[0.25] * 3)
    assert head_name(model) == "net.fc"
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnet5'"):
        famr.create_model("torchvision:resnet5", 7)
    with pytest.raises(ValueError, match="take 3 input channels"):
        famr.create_model("torchvision:resnet18", 7, in_channels=1)


def test_timm_model_by_name():
    pytest.importorskip("timm")
    model = famr.create_model("timm:resnet10t", 5)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="timm has no model"):
        famr.create_model("timm:no_such_net", 5)


def test_import_torchvision_weights_with_a_new_head(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=1000)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)
    out = tmp_path / "r18.safetensors"
    argv = ["import", "--weights", str(weights), "--arch", "torchvision:resnet18"]
    argv += ["--num-classes", "3", "--out", str(out)]
    code, _, err = _run(argv)
    assert code == 2 and "do not match" in err  # 1000 classes in the file, 3 asked
    code, _, err = _run([*argv, "--replace-head"])
    assert code == 0, err
    model, meta = io.load_checkpoint(out)
    assert meta["replaced_head"] == {"from_classes": 1000, "seed": 0}
    assert torch.equal(model.net.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.net.fc.weight.shape == (3, 512)


@pytest.mark.science
def test_train_and_forget_a_torchvision_model_on_an_imagefolder(tmp_path):
    pytest.importorskip("torchvision")
    root = _tree(tmp_path / "tree", size=(24, 24))
    data = ["--data", "imagefolder", "--data-root", str(root), "--workers", "0"]
    model = tmp_path / "m.safetensors"
    argv = ["train", *data, "--arch", "torchvision:resnet18", "--epochs", "2"]
    assert _run([*argv, "--out", str(model), "--quiet"])[0] == 0
    out = tmp_path / "f.safetensors"
    argv = ["forget", *data, "--checkpoint", str(model), "--classes", "1", "--epochs", "5"]
    code, stdout, err = _run([*argv, "--out", str(out), "--quiet"])
    assert code == 0, err
    assert json.loads(io.sidecar_path(out).read_text())["metrics"]["forget_acc"] <= 25.0


# --- data parallel under torchrun -----------------------------------------------------------


def _forget(checkpoint: Path, out: Path, processes: int, method: str, code: int = 0) -> str:
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
    argv += ["--standalone", "-m", "famr.cli", "forget", "--checkpoint", str(checkpoint)]
    argv += ["--classes", "3", "--method", method, "--epochs", "2", "--out", str(out), "--quiet"]
    if method == "famr":  # its head recipe: the last_stage recipe is refused under torchrun
        argv += ["--set", "recipe=head"] if code == 0 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    if code == 0 and done.returncode != 0 and "(SIGABRT)" in done.stderr:
        # a gloo rank aborted by a signal, once in about a dozen clean runs on this 2-core
        # machine (2026-12-03, gradient_ascent; the same command then passed 9 times): one
        # retry, so that a crash that is ours still fails
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    # torchrun itself exits 1 when a rank fails; the rank's own exit code is in its log
    assert (done.returncode == 0) == (code == 0), done.stderr[-2000:]
    return done.stderr


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "digits.safetensors"
    assert _run(["train", "--epochs", "4", "--out", str(path), "--quiet"])[0] == 0
    return path


def test_famr_last_stage_recipe_is_refused_under_torchrun_with_what_to_do(
    digits_checkpoint, tmp_path
):
    """Re-initialised BatchNorm statistics cannot be shared across ranks: the default famr,
    handed the retain set, says so in one line and writes nothing."""
    out = tmp_path / "m.safetensors"
    err = _forget(digits_checkpoint, out, 2, "famr", code=2)
    assert "pass recipe='head'" in err and "exitcode  : 2" in err and not out.exists()


@pytest.mark.parametrize("method", ["famr_literal", "famr", "gradient_ascent"])
def test_two_processes_match_one(digits_checkpoint, tmp_path, method):
    one, two = tmp_path / "one" / "m.safetensors", tmp_path / "two" / "m.safetensors"
    _forget(digits_checkpoint, one, 1, method)
    _forget(digits_checkpoint, two, 2, method)
    a, meta_a = io.load_checkpoint(one)
    b, meta_b = io.load_checkpoint(two)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(x, y, atol=1e-6, rtol=1e-5), name
    for key in ("forget_acc", "test_retain_acc", "mia_efficacy"):
        assert meta_a["metrics"][key] == pytest.approx(meta_b["metrics"][key], abs=1e-6)
    if meta_a["certificate"] is not None:
        assert meta_a["certificate"]["distance"] == pytest.approx(
            meta_b["certificate"]["distance"], rel=1e-5
        )
    # only rank 0 wrote: the checkpoint, its metadata and the audit record, nothing else
    assert sorted(p.name for p in two.parent.iterdir()) == [
        "m.audit.json",
        "m.json",
        "m.safetensors",
    ]


def test_torch_compile_option_gives_the_eager_result(tiny):
    model, forget, retain = tiny
    common = dict(method="famr_literal", epochs=2, batch_size=8, certificate=False)
    eager = famr.unlearn(model, forget, **common)
    compiled = famr.unlearn(model, forget, compile=True, **common)
    for a, b in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert getattr(compiled.model, "_compiled_call_impl", None) is None  # handed back eager
    with pytest.raises(ValueError, match="compile='yes' is not valid"):
        famr.unlearn(model, forget, compile="yes", **common)


def test_arch_args_reach_the_constructor_and_the_checkpoint(tmp_path):
    """famr train --arch-arg: a timm ViT rebuilt for 16 px images; the checkpoint records the
    arguments, so famr forget rebuilds the same model; a bad one is a one-line error."""
    pytest.importorskip("timm")
    root = _tree(tmp_path / "tree", size=(16, 16))
    out = tmp_path / "vit.safetensors"
    data = ["--data", "imagefolder", "--data-root", str(root), "--workers", "0"]
    arch = ["--arch", "timm:vit_tiny_patch16_224", "--arch-arg", "img_size=16"]
    arch += ["--arch-arg", "patch_size=4", "--arch-arg", "depth=2"]
    code, _, err = _run(["train", *data, *arch, "--epochs", "1", "--out", str(out), "--quiet"])
    assert code == 0, err
    model, meta = io.load_checkpoint(out)
    assert (meta["arch_args"]["img_size"], meta["arch_args"]["depth"]) == (16, 2)
    assert len(model.net.blocks) == 2
    forgot = tmp_path / "forgot.safetensors"
    argv = ["forget", *data, "--checkpoint", str(out), "--classes", "1", "--out", str(forgot)]
    # at the last_stage recipe's 16 plain passes at SGD peak lr 0.4 (chosen on CIFAR-10's
    # ResNet-20; the default again since 2026-12-07's three-rate study, at temperature 4) this
    # two-block 16-px ViT on a few images diverges (at pass 7 with the forget set unread; with
    # the distilled forget target at lr 0.1 too, at pass 13), which famr refuses with a
    # one-line error (README, "Where famr stands"); what is tested here is the arch arguments,
    # with the gradient clipped
    code, _, err = _run([*argv, "--set", "grad_clip=1.0", "--quiet"])
    assert code == 0, err
    for bad, words in (("img_size", "is not valid"), ("num_classes=3", "famr sets it")):
        code, _, err = _run(
            ["train", *data, *arch, "--arch-arg", bad, "--out", str(tmp_path / "x.safetensors")]
        )
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1
