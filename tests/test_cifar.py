"""CIFAR-10 loading (on the shared copy when present), CIFAR ResNets, and external weights."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import famr
from famr import io
from famr.cli import main
from famr.data import hold_out_validation
from famr.models.external import load_external, map_keys

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
needs_cifar = pytest.mark.skipif(
    not (SHARED / "cifar-10-batches-py").is_dir(), reason="shared CIFAR-10 not present"
)


def _fake_cifar(root: Path, n: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": list(np.arange(n) % 10),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return root


def test_loads_a_standard_layout(tmp_path):
    data = famr.load_dataset("cifar10", _fake_cifar(tmp_path))
    images, labels = data.train.tensors
    assert images.shape == (100, 3, 32, 32) and images.dtype == torch.uint8
    assert len(data.test) == 20 and data.class_names[3] == "cat"
    assert famr.load_dataset("cifar10", tmp_path / "cifar-10-batches-py").num_classes == 10


def test_missing_or_malformed_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        famr.load_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="lacks CIFAR-10 files"):
        famr.load_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError, match="needs --data-root"):
        famr.load_dataset("cifar10", None)
    root = _fake_cifar(tmp_path / "broken")
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3.*malformed"):
        famr.load_dataset("cifar10", root)


def test_hold_out_validation_is_stratified_and_disjoint(tmp_path):
    data = famr.load_dataset("cifar10", _fake_cifar(tmp_path))
    split = hold_out_validation(data, fraction=0.2, seed=0)
    assert len(split.train) == 80 and len(split.validation) == 20
    assert split.validation.tensors[1].bincount(minlength=10).tolist() == [2] * 10
    again = hold_out_validation(data, fraction=0.2, seed=0)
    assert torch.equal(again.validation.tensors[0], split.validation.tensors[0])
    with pytest.raises(ValueError, match="validation fraction"):
        hold_out_validation(data, fraction=1.5)


@needs_cifar
def test_shared_cifar10_matches_its_readme():
    data = hold_out_validation(famr.load_dataset("cifar10", SHARED))
    assert len(data.train) == 45_000 and len(data.validation) == 5_000 and len(data.test) == 10_000
    assert data.train.tensors[1].bincount().tolist() == [4500] * 10
    full = famr.load_dataset("cifar10", SHARED)
    assert full.train.tensors[1][:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert full.test.tensors[1][:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet18_cifar", 11_173_962),
    ],
)
def test_cifar_resnet_sizes(name, params):
    model = famr.create_model(name, 10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcuts_have_no_parameters():
    model = famr.create_model("resnet20", 10)
    assert not [n for n, _ in model.named_parameters() if "shortcut" in n]
    depth = (
        sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) + 1
    )  # convs + the classifier
    assert depth == 20


def test_external_weights_with_dataparallel_prefix(tmp_path):
    source = famr.create_model("resnet20", 10)
    path = tmp_path / "their.pt"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path
    )
    target = famr.create_model("resnet20", 10, mean=[0.5] * 3, std=[0.25] * 3)
    load_external(target, path, strip_prefix="module.")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(target.eval()(x), source.eval()((x - 0.5) / 0.25))
    with pytest.raises(ValueError, match="do not match the architecture"):
        load_external(famr.create_model("resnet20", 10), path)  # prefix not stripped


def test_external_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": Evil()}, f)
    with pytest.raises(ValueError, match="refused"):
        load_external(famr.create_model("resnet20", 10), path)


def test_map_keys_renames_prefixes():
    out = map_keys(
        {"module.layer1.0.w": 1, "module.fc.b": 2},
        strip_prefix="module.",
        renames=[("fc.", "linear.")],
    )
    assert out == {"layer1.0.w": 1, "linear.b": 2}


def test_cli_import(tmp_path):
    source = famr.create_model("resnet20", 10)
    weights = tmp_path / "w.pt"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, weights)
    out = tmp_path / "imported.safetensors"
    argv = [
        "import",
        "--weights",
        str(weights),
        "--arch",
        "resnet20",
        "--strip-prefix",
        "module.",
        "--mean",
        "0.4914,0.4822,0.4465",
        "--std",
        "0.2470,0.2435,0.2616",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    model, meta = io.load_checkpoint(out)
    assert meta["arch_args"]["mean"] == [0.4914, 0.4822, 0.4465]
    torch.testing.assert_close(model.linear.weight, source.linear.weight)
