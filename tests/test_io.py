import pickle

import pytest
import torch

import famr
from famr import io


def test_checkpoint_round_trip(tmp_path):
    model = famr.create_model("small_cnn", 10, in_channels=1, width=8)
    path = tmp_path / "m.safetensors"
    io.save_checkpoint(
        path,
        model,
        {"arch": "small_cnn", "arch_args": {"num_classes": 10, "in_channels": 1, "width": 8}},
    )
    loaded, meta = io.load_checkpoint(path)
    assert meta["format_version"] == io.FORMAT_VERSION
    for (k, v), w in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


class Boom:
    def __reduce__(self):
        return (open, ("/tmp/famr-should-not-exist", "w"))


def test_pickle_checkpoint_is_refused_and_never_executed(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    # a sidecar that vouches for the pickle's bytes: the loader still only parses safetensors
    io.sidecar_path(path).write_text(
        '{"arch": "small_cnn", "arch_args": {"num_classes": 10, "in_channels": 1}, '
        f'"weights_sha256": "{io.sha256_file(path)}"}}'
    )
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        io.load_checkpoint(path)
    import os

    assert not os.path.exists("/tmp/famr-should-not-exist")


def test_mismatched_architecture_is_a_clear_error(tmp_path):
    model = famr.create_model("small_cnn", 10, in_channels=1, width=8)
    path = tmp_path / "m.safetensors"
    io.save_checkpoint(
        path,
        model,
        {"arch": "small_cnn", "arch_args": {"num_classes": 10, "in_channels": 1, "width": 16}},
    )
    with pytest.raises(ValueError, match="does not match architecture 'small_cnn'"):
        io.load_checkpoint(path)


def test_json_text_has_no_nan_literal():
    assert "NaN" not in io.json_text({"x": float("nan"), "y": [float("inf")]})


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    path = tmp_path / "x.json"
    io.write_text_atomic(path, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask
