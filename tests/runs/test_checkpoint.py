import warnings

import pytest
import torch

from ssl_speech.runs import checkpoint as ckpt


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "step": step}


def test_save_writes_file_and_hash_atomically(tmp_path):
    path = ckpt.save_checkpoint(_state(1), ckpt.checkpoint_path(tmp_path, 1))
    assert path.name == "ckpt-00000001.pt"
    assert ckpt.verify_checkpoint(path) is None
    leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 1.0))


def test_truncated_latest_falls_back_to_previous_with_warning(tmp_path):
    for step in (10, 20):
        ckpt.save_checkpoint(_state(step), ckpt.checkpoint_path(tmp_path, step))
    latest = ckpt.checkpoint_path(tmp_path, 20)
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="ckpt-00000020.pt is unusable"):
        found = ckpt.latest_valid_checkpoint(tmp_path)
    assert found == ckpt.checkpoint_path(tmp_path, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ckpt.load_checkpoint(tmp_path)["step"] == 10


def test_flipped_byte_is_detected(tmp_path):
    path = ckpt.save_checkpoint(_state(5), ckpt.checkpoint_path(tmp_path, 5))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "does not match" in ckpt.verify_checkpoint(path)
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        ckpt.load_checkpoint(path)


def test_missing_sidecar_means_incomplete(tmp_path):
    path = ckpt.save_checkpoint(_state(3), ckpt.checkpoint_path(tmp_path, 3))
    path.with_name(path.name + ".sha256").unlink()
    assert "sidecar" in ckpt.verify_checkpoint(path)
    with pytest.warns(UserWarning):
        assert ckpt.latest_valid_checkpoint(tmp_path) is None


def test_prune_keeps_last_n(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(_state(step), ckpt.checkpoint_path(tmp_path, step))
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "ckpt-00000003.pt", "ckpt-00000004.pt"]
    assert not ckpt.checkpoint_path(tmp_path, 1).with_suffix(".pt.sha256").exists()


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(ckpt.CheckpointError, match="no usable checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ckpt.CheckpointError, match="not an ssl_speech checkpoint"):
        ckpt.load_checkpoint(other)
