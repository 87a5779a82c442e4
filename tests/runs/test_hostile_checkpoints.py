"""Hostile checkpoints and exported directories: each is refused, and nothing runs.

Every case is loaded next to a sentinel file and a directory; afterwards the sentinel still holds
its bytes, the directory is intact and no marker file has appeared, so a refusal that came after
the damage would fail the test.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from ssl_speech.nn.model_config import UnsafeConfigError, build_model
from ssl_speech.objectives.frozen_teacher import FrozenTeacher
from ssl_speech.runs import checkpoint as ckpt

ENCODER = {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 8}
CONTEXT = {"_target_": "ssl_speech.nn.context.LSTMContext", "input_dim": 8, "dim": 8}


class Scene:
    """A sentinel file, a sentinel directory and a marker path that must never appear."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.sentinel = root / "sentinel.txt"
        self.sentinel.write_text("keep me")
        self.folder = root / "folder"
        self.folder.mkdir()
        (self.folder / "inside.txt").write_text("keep me too")
        self.marker = root / "marker.txt"
        self.before = self.listing()

    def listing(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes()
                for p in sorted(self.root.rglob("*")) if p.is_file()}

    def assert_untouched(self, created: set[str] = frozenset()) -> None:
        after = self.listing()
        assert not self.marker.exists()
        assert self.sentinel.read_text() == "keep me"
        assert (self.folder / "inside.txt").read_text() == "keep me too"
        assert {k: v for k, v in after.items() if k not in created} == self.before


@pytest.fixture
def scene(tmp_path) -> Scene:
    return Scene(tmp_path / "scene")


def good_model():
    torch.manual_seed(0)
    return build_model({"encoder": ENCODER, "context": CONTEXT}, "test")


def write_checkpoint(path: Path, config, model_state=None) -> Path:
    state = {"model": good_model().state_dict() if model_state is None else model_state,
             "config": config, "step": 3}
    return ckpt.save_checkpoint(state, path)


def foreign_targets(scene: Scene) -> dict[str, dict]:
    s, m, d = str(scene.sentinel), str(scene.marker), str(scene.folder)
    return {
        "pathlib-unlink": {"_target_": "pathlib.Path.unlink", "_args_": [s]},
        "pathlib-write": {"_target_": "pathlib.Path.write_text", "_args_": [m, "x"]},
        "os-remove": {"_target_": "os.remove", "_args_": [s]},
        "os-rename": {"_target_": "os.rename", "_args_": [s, m]},
        "shutil-rmtree": {"_target_": "shutil.rmtree", "path": d},
        "shutil-copy": {"_target_": "shutil.copy", "src": s, "dst": m},
        "subprocess-run": {"_target_": "subprocess.run",
                           "args": [sys.executable, "-c", f"open({m!r}, 'w')"]},
        "builtins-open": {"_target_": "builtins.open", "file": m, "mode": "w"},
        "builtins-exec": {"_target_": "builtins.exec", "_args_": [f"open({m!r}, 'w')"]},
        "functools-partial": {"_target_": "functools.partial",
                              "_args_": ["${os.remove}", s]},
        "importlib": {"_target_": "importlib.import_module", "name": "antigravity"},
        "torch-hub": {"_target_": "torch.hub.load", "repo_or_dir": d, "model": "x",
                      "source": "local"},
        "torch-save": {"_target_": "torch.save", "obj": 1, "f": m},
        "library-but-not-a-model": {"_target_": "ssl_speech.runs.checkpoint.prune_checkpoints",
                                    "run_dir": d, "keep_last": 1},
        "dunder-of-a-model-class": {"_target_": "ssl_speech.nn.encoders.CPCEncoder.__init__"},
        "not-a-string": {"_target_": ["pathlib.Path.unlink"], "_args_": [s]},
        "no-target": {"dim": 8},
        "a-string": "os.system",
    }


@pytest.mark.parametrize("section", ["encoder", "context"])
def test_foreign_targets_are_refused_naming_key_and_target(tmp_path, scene, section):
    for name, hostile in foreign_targets(scene).items():
        config = {"encoder": ENCODER, "context": CONTEXT, section: hostile}
        path = write_checkpoint(tmp_path / name / "ckpt.pt", config)
        with pytest.raises(UnsafeConfigError, match=rf"config key {section}") as info:
            ckpt.load_model(path)
        if isinstance(hostile, dict) and isinstance(hostile.get("_target_"), str):
            assert repr(hostile["_target_"]) in str(info.value), name
        assert str(path) in str(info.value)
        scene.assert_untouched()


def nested_cases(scene: Scene) -> dict[str, tuple[dict, str]]:
    unlink = {"_target_": "pathlib.Path.unlink", "_args_": [str(scene.sentinel)]}
    return {
        "nested-argument": ({**ENCODER, "norm": unlink}, r"encoder\.norm\._target_"),
        "nested-in-list": ({**ENCODER, "norm": [unlink]}, r"encoder\.norm\[0\]\._target_"),
        "deeply-nested": ({**ENCODER, "norm": {"a": {"b": unlink}}}, r"encoder\.norm is a map"),
        "partial": ({**ENCODER, "_partial_": True}, r"encoder\._partial_"),
        "args": ({**ENCODER, "_args_": [8]}, r"encoder\._args_"),
        "recursive": ({**ENCODER, "_recursive_": False}, r"encoder\._recursive_"),
        "convert": ({**ENCODER, "_convert_": "all"}, r"encoder\._convert_"),
        "unknown-argument": ({**ENCODER, "callback": "os.remove"}, r"encoder\.callback is not"),
        "bad-value": ({**ENCODER, "dim": "${oc.env:HOME}"}, r"encoder cannot be built"),
    }


def test_nested_targets_and_hydra_tricks_are_refused(tmp_path, scene):
    for name, (encoder, message) in nested_cases(scene).items():
        path = write_checkpoint(tmp_path / name / "ckpt.pt", {"encoder": encoder,
                                                              "context": CONTEXT})
        with pytest.raises(UnsafeConfigError, match=message):
            ckpt.load_model(path)
        scene.assert_untouched()


def test_a_hostile_context_stops_loading_before_the_encoder_is_built(tmp_path, scene,
                                                                      monkeypatch):
    from ssl_speech.nn import encoders

    built = []
    original = encoders.CPCEncoder.__init__

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(encoders.CPCEncoder, "__init__", spy)
    hostile = {"_target_": "pathlib.Path.unlink", "_args_": [str(scene.sentinel)]}
    path = ckpt.save_checkpoint({"model": {}, "config": {"encoder": ENCODER, "context": hostile}},
                                tmp_path / "ckpt.pt")
    with pytest.raises(UnsafeConfigError, match="context._target_"):
        ckpt.load_model(path)
    assert built == []
    scene.assert_untouched()


class _Touch:
    """Pickles to a call of ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_refused_unread(tmp_path, scene):
    path = tmp_path / "pickled.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": {}, "hook": _Touch(scene.marker)},
               path)
    with pytest.raises(ckpt.CheckpointError, match="plain data only"):
        ckpt.load_model(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": _Touch(scene.marker)}, protocol=2))
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load_model(raw)
    scene.assert_untouched()


def test_absurd_model_sizes_in_the_config_are_refused_without_allocating(tmp_path):
    huge = {"_target_": "ssl_speech.nn.context.TransformerContext", "input_dim": 8,
            "dim": 1 << 20, "num_heads": 8, "ffn_dim": 1 << 24, "num_layers": 64}
    path = write_checkpoint(tmp_path / "huge.pt", {"encoder": ENCODER, "context": huge})
    with pytest.raises(UnsafeConfigError, match="parameters, more than the limit"):
        ckpt.load_model(path)
    logmel = {"_target_": "ssl_speech.nn.encoders.LogMelEncoder", "dim": 8,
              "hidden": 1 << 20, "n_mels": 8}
    path = write_checkpoint(tmp_path / "logmel.pt", {"encoder": logmel, "context": CONTEXT})
    with pytest.raises(UnsafeConfigError, match=r"encoder\.hidden = 1048576 is larger"):
        ckpt.load_model(path)


def test_tensors_declaring_more_elements_than_they_hold_are_refused(tmp_path):
    state = good_model().state_dict()
    name = "context.layers.0.weight_ih_l0"
    state[name] = torch.zeros(1).expand(10**12)  # a 4 TB tensor in a few bytes
    path = write_checkpoint(tmp_path / "expanded.pt", {"encoder": ENCODER, "context": CONTEXT},
                            state)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(UnsafeConfigError, match=rf"{name} declares \(1000000000000,\)"):
        ckpt.load_model(path)


def test_a_storage_declaring_more_bytes_than_the_file_holds_is_refused(tmp_path):
    """The zip record of a storage is short of what the pickle declares."""
    path = write_checkpoint(tmp_path / "ckpt.pt", {"encoder": ENCODER, "context": CONTEXT})
    forged = tmp_path / "forged.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if "/data/" in item.filename and len(data) > 64:
                data = data[:16]
            dst.writestr(item, data)
    with pytest.raises((ckpt.CheckpointError, UnsafeConfigError)):
        ckpt.load_model(forged)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update({"context.layers.0.weight_ih_l0": torch.zeros(32, 9)}),
         r"weight_ih_l0 has shape \(32, 9\), the model built from the config needs \(32, 8\)"),
        (lambda s: s.pop("encoder.convs.0.weight", None) if "encoder.convs.0.weight" in s
         else s.pop(next(iter(s))), r"missing"),
        (lambda s: s.update({"extra.weight": torch.zeros(1)}), r"unexpected extra.weight"),
        (lambda s: s.update({"context.layers.0.bias_ih_l0": [0.0] * 32}), r"is a list"),
        (lambda s: s.update({"context.layers.0.bias_ih_l0": torch.zeros(32, dtype=torch.long)}),
         r"dtype torch.int64"),
    ],
    ids=["shape", "missing", "unexpected", "not-a-tensor", "integer"],
)
def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, change, message):
    state = good_model().state_dict()
    change(state)
    path = write_checkpoint(tmp_path / "ckpt.pt", {"encoder": ENCODER, "context": CONTEXT},
                            state)
    with pytest.raises(UnsafeConfigError, match=message):
        ckpt.load_model(path)


def test_frozen_teacher_pointed_at_a_hostile_checkpoint_is_refused(tmp_path, scene):
    hostile = {"_target_": "pathlib.Path.unlink", "_args_": [str(scene.sentinel)]}
    run = tmp_path / "teacher_run"
    write_checkpoint(ckpt.checkpoint_path(run, 3), {"encoder": hostile, "context": CONTEXT})
    with pytest.raises(UnsafeConfigError, match=r"config key encoder\._target_ names "
                                                r"'pathlib.Path.unlink'"):
        FrozenTeacher(checkpoint=run)
    scene.assert_untouched()


def test_a_trusted_checkpoint_still_loads(tmp_path):
    path = write_checkpoint(tmp_path / "ok.pt", {"encoder": ENCODER, "context": CONTEXT})
    model = ckpt.load_model(path)
    reference = good_model()
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    teacher = FrozenTeacher(checkpoint=path)
    assert teacher.dim == 8 and teacher.hop == 160


def exported(tmp_path: Path) -> Path:
    return good_model().save_pretrained(tmp_path / "exported")


def test_hostile_exported_configs_are_refused(tmp_path, scene):
    pytest.importorskip("safetensors")
    directory = exported(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    for hostile in foreign_targets(scene).values():
        (directory / "config.json").write_text(json.dumps({**config, "encoder": hostile}))
        with pytest.raises(UnsafeConfigError, match="config key encoder"):
            ckpt.load_model(directory)
        scene.assert_untouched()


def test_exported_weights_with_a_lying_header_are_refused(tmp_path):
    pytest.importorskip("safetensors")
    directory = exported(tmp_path)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10**6, 10**6]
    header[name]["data_offsets"] = [0, 4 * 10**12]
    text = json.dumps(header).encode()
    weights.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + header_len :])
    with pytest.raises(ValueError, match="cannot read"):
        ckpt.load_model(directory)


def test_loading_does_not_call_hydra_instantiate(tmp_path, monkeypatch):
    import hydra.utils

    def forbidden(*args, **kwargs):
        raise AssertionError("loading called hydra.utils.instantiate")

    monkeypatch.setattr(hydra.utils, "instantiate", forbidden)
    path = write_checkpoint(tmp_path / "ok.pt", {"encoder": ENCODER, "context": CONTEXT})
    ckpt.load_model(path)
    assert os.path.exists(path)


class MyEncoder(torch.nn.Module):
    """A user's own encoder: a CPC encoder under another name."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        from ssl_speech.nn.encoders import CPCEncoder

        self.inner = CPCEncoder(dim=dim)
        self.dim, self.hop = dim, self.inner.hop
        self.receptive_field, self.frame_local = self.inner.receptive_field, True

    def num_frames(self, num_samples: int) -> int:
        return self.inner.num_frames(num_samples)

    def forward(self, wav):
        return self.inner(wav)


def test_own_classes_load_only_when_the_caller_names_them(tmp_path):
    target = f"{__name__}.MyEncoder"
    model = build_model({"encoder": {"_target_": target, "dim": 8}, "context": CONTEXT}, "test",
                        extra_classes={target: MyEncoder})
    path = write_checkpoint(tmp_path / "own.pt", model.config, model.state_dict())
    with pytest.raises(UnsafeConfigError, match=rf"encoder\._target_ names '{target}'"):
        ckpt.load_model(path)
    loaded = ckpt.load_model(path, extra_classes={target: MyEncoder})
    wav = torch.randn(3200)
    assert torch.equal(loaded.extract(wav), model.eval().extract(wav))
    with pytest.raises(UnsafeConfigError, match=r"encoder\._partial_"):
        build_model({"encoder": {"_target_": target, "_partial_": True}, "context": CONTEXT},
                    "test", extra_classes={target: MyEncoder})
