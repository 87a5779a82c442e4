import errno
import io
import os
import signal
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


# --------------------------------------------------------------------------------------------
# Kills and a full disk during a write
# --------------------------------------------------------------------------------------------


def _in_child(fault, action) -> int:
    """Run ``action()`` in a forked child with ``fault()`` installed; return its exit signal."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            torch.set_num_threads(1)  # no intra-op pool inherited half-made from the parent
            fault()
            action()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def _kill_after_bytes(limit: int):
    def install():
        real_save = torch.save

        def partial_save(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[:limit])
                out.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = partial_save
    return install


def _kill_before(point: str, nth: int):
    def install():
        real = getattr(os, point)
        calls = []

        def wrapped(*args, **kwargs):
            calls.append(1)
            if len(calls) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        setattr(os, point, wrapped)
    return install


def _saved_size(tmp_path) -> int:
    probe = tmp_path / "probe"
    return ckpt.save_checkpoint(_state(20), ckpt.checkpoint_path(probe, 20)).stat().st_size


@pytest.mark.parametrize("where", ["bytes", "points"])
def test_a_kill_at_any_moment_of_a_write_leaves_the_previous_checkpoint(tmp_path, where):
    """The newest usable checkpoint is the old one, or the new one complete: never a wreck."""
    size = _saved_size(tmp_path)
    if where == "bytes":
        faults = {f"byte {n}": (_kill_after_bytes(n), False)
                  for n in sorted({0, 1, 63, size // 3, size // 2, size - 1, size})}
    else:  # before each step of the write: fsync tmp, rename, fsync sidecar, rename, fsync dir
        faults = {f"{point} #{nth}": (_kill_before(point, nth), (point, nth) == ("fsync", 3))
                  for point, nth in [("fsync", 1), ("replace", 1), ("fsync", 2),
                                     ("replace", 2), ("fsync", 3)]}
    for name, (fault, new_survives) in faults.items():
        run = tmp_path / name.replace(" ", "_").replace("#", "")
        ckpt.save_checkpoint(_state(10), ckpt.checkpoint_path(run, 10))
        killed = _in_child(fault, lambda run=run: ckpt.save_checkpoint(
            _state(20), ckpt.checkpoint_path(run, 20)))
        assert killed == signal.SIGKILL, name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = ckpt.latest_valid_checkpoint(run)
            state = ckpt.load_checkpoint(run)
        expected = 20 if new_survives else 10
        assert found == ckpt.checkpoint_path(run, expected), name
        assert torch.equal(state["model"]["w"], torch.full((3,), float(expected))), name
        # The next save clears the killed write's temporary file and is valid.
        ckpt.save_checkpoint(_state(30), ckpt.checkpoint_path(run, 30))
        assert [p.name for p in (run / ckpt.CHECKPOINT_DIR).iterdir() if
                p.name.endswith(".tmp")] == [], name
        assert ckpt.latest_valid_checkpoint(run) == ckpt.checkpoint_path(run, 30)


def test_a_resave_killed_between_renames_is_not_taken_for_the_old_one(tmp_path):
    ckpt.save_checkpoint(_state(10), ckpt.checkpoint_path(tmp_path, 10))
    ckpt.save_checkpoint(_state(20), ckpt.checkpoint_path(tmp_path, 20))
    killed = _in_child(_kill_before("replace", 2), lambda: ckpt.save_checkpoint(
        _state(21), ckpt.checkpoint_path(tmp_path, 20)))
    assert killed == signal.SIGKILL
    path = ckpt.checkpoint_path(tmp_path, 20)
    assert "sidecar" in ckpt.verify_checkpoint(path)  # the old sidecar went first
    with pytest.warns(UserWarning, match="no .sha256 sidecar"):
        assert ckpt.latest_valid_checkpoint(tmp_path) == ckpt.checkpoint_path(tmp_path, 10)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing "
                 "file data/0: file write failed: No space left on device"),
], ids=["oserror", "torch-runtime-error"])
def test_a_full_disk_during_the_write_names_the_cause_and_keeps_the_old(tmp_path, monkeypatch,
                                                                          error):
    ckpt.save_checkpoint(_state(10), ckpt.checkpoint_path(tmp_path, 10))
    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as out:
            out.truncate(100)
        raise error

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ckpt.CheckpointError, match=r"ckpt-00000020.pt.*disk is full"):
        ckpt.save_checkpoint(_state(20), ckpt.checkpoint_path(tmp_path, 20))
    names = sorted(p.name for p in (tmp_path / ckpt.CHECKPOINT_DIR).iterdir())
    assert names == ["ckpt-00000010.pt", "ckpt-00000010.pt.sha256"]
    assert ckpt.latest_valid_checkpoint(tmp_path) == ckpt.checkpoint_path(tmp_path, 10)


def test_a_full_disk_for_the_sidecar_removes_the_unverifiable_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(_state(10), ckpt.checkpoint_path(tmp_path, 10))

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt, "_atomic_write_bytes", full)
    with pytest.raises(ckpt.CheckpointError, match="disk is full"):
        ckpt.save_checkpoint(_state(20), ckpt.checkpoint_path(tmp_path, 20))
    assert not ckpt.checkpoint_path(tmp_path, 20).exists()
    assert ckpt.latest_valid_checkpoint(tmp_path) == ckpt.checkpoint_path(tmp_path, 10)
