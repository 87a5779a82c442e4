"""The package as a new user gets it: a built wheel, installed (not editable) in a fresh venv.

The wheel is built from this checkout's packaging files, installed with ``--no-deps`` into a
new virtual environment whose dependencies come from the running interpreter's site-packages
(a ``.pth`` file: nothing is downloaded), and used from a directory outside the checkout:

- the installed commands train a tiny model, evaluate it and export it;
- the exported directory reloads with ``SSLModel.from_pretrained``, ``ssl_speech.load_model``,
  ``torch.hub.load(..., source="local")`` (a directory holding only ``hubconf.py``) and the s3prl
  upstream, each giving the checkpoint's features bit for bit (the s3prl upstream's padded
  batch equals ``extract`` of each recording alone up to float rounding).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ssl_speech.runs.checkpoint import checkpoint_path

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "ssl_speech", "configs")

# Runs inside the installed venv: every way to load the exported model, against the checkpoint.
RELOAD = r"""
import json, sys
import torch
import ssl_speech
from ssl_speech.integrations.s3prl import UpstreamExpert

run_dir, exported, hub_dir = sys.argv[1:4]
wavs = [torch.randn(16000 * 2, generator=torch.Generator().manual_seed(0)),
        torch.randn(12345, generator=torch.Generator().manual_seed(1))]
reference = ssl_speech.load_model(run_dir)
expected = [reference.extract(w, layers="all") for w in wavs]
loaded = {
    "from_pretrained": ssl_speech.SSLModel.from_pretrained(exported),
    "load_model": ssl_speech.load_model(exported),
    "torch_hub": torch.hub.load(hub_dir, "model", exported, source="local"),
}
same = {name: all(torch.equal(e[k], model.extract(w, layers="all")[k])
                  for w, e in zip(wavs, expected) for k in e)
        for name, model in loaded.items()}
# The s3prl upstream pads the batch: over the exported directory it equals the upstream over
# the checkpoint bit for bit, and each recording's frames equal extract() alone up to float
# rounding (one padded pass against single passes).
with torch.no_grad():
    upstream = UpstreamExpert(exported).eval()
    hidden = upstream(wavs)["hidden_states"]
    from_checkpoint = UpstreamExpert(run_dir).eval()(wavs)["hidden_states"]
names = upstream.layer_names
same["s3prl"] = len(hidden) == len(names) == len(from_checkpoint) and all(
    torch.equal(h, c) for h, c in zip(hidden, from_checkpoint))
same["s3prl_vs_extract"] = all(
    torch.allclose(hidden[i][b, : e[name].shape[0]], e[name], atol=1e-5, rtol=1e-5)
    for i, name in enumerate(names) for b, e in enumerate(expected))
print(json.dumps({"package": ssl_speech.__file__, "same": same, "layers": names}))
"""


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300,
         ) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(map(str, command))} failed:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel installed; returns its ``bin`` directory."""
    pytest.importorskip("setuptools")
    top = tmp_path_factory.mktemp("wheel")
    source = top / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, source / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dist = top / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(dist), str(source)], top, env)
    (wheel,) = dist.glob("ssl_speech-*.whl")
    env_dir = top / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], top, env)
    python = env_dir / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; "
                         "print(sysconfig.get_paths()['purelib'])"], top, env).stdout.strip())
    # The dependencies (torch, hydra, ...) are the running interpreter's: no download.
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", str(wheel)], top, env)
    return env_dir / "bin"


@pytest.mark.slow
def test_the_installed_package_trains_evaluates_exports_and_reloads(venv, tiny_corpus,
                                                                     tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    work = tmp_path / "user"  # outside the checkout: only the installed package is importable
    work.mkdir()
    run_dir = work / "run"
    _run([str(venv / "ssl-speech-train"), "objective=cpc", "data=librispeech",
          f"data.root={tiny_corpus}", f"data.alignments={tiny_corpus}/alignments.txt",
          "data.window=3200", "data.batch_size=4", "encoder.dim=32", "encoder.hidden=32",
          "context.dim=32", "objective.num_steps=4", "objective.num_negatives=8",
          "trainer.max_steps=4", "trainer.val_every=4", "trainer.val_batches=1",
          "trainer.checkpoint_every=4", "trainer.progress=false", "trainer.tensorboard=false",
          "trainer.device=cpu", "trainer.threads=1", "optim.warmup_steps=1",
          "probe.enabled=false", f"run_dir={run_dir}", "run_name=installed"], work, env)
    assert checkpoint_path(run_dir, 4).is_file()

    report = work / "eval"
    _run([str(venv / "ssl-speech-evaluate"), str(run_dir), "--corpus", str(tiny_corpus),
          "--stages", "phone_probe", "--no-plots", "--epochs", "2", "--threads", "1",
          "--out", str(report)], work, env)
    assert (report / "report.md").is_file()

    exported = work / "exported"
    _run([str(venv / "ssl-speech-export-model"), str(run_dir), str(exported)], work, env)
    assert {p.name for p in exported.iterdir()} == {"config.json", "model.safetensors"}

    hub_dir = work / "hub"  # what torch.hub.load(source="local") needs: hubconf.py
    hub_dir.mkdir()
    shutil.copy(REPO / "hubconf.py", hub_dir / "hubconf.py")
    result = _run([str(venv / "python"), "-c", RELOAD, str(run_dir), str(exported),
                   str(hub_dir)], work, env)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(outcome["package"]).is_relative_to(venv.parent), outcome["package"]
    assert outcome["same"] == {"from_pretrained": True, "load_model": True, "torch_hub": True,
                               "s3prl": True, "s3prl_vs_extract": True}, outcome


# The public names at the package root (ssl_speech/__init__.py), in fresh interpreters.
def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return _run([sys.executable, "-c", code], REPO, env, timeout=120).stdout


@pytest.mark.parametrize("light", ["ssl_speech", "ssl_speech.data"])
def test_importing_the_package_or_its_data_room_stays_light(light):
    out = _python(f"import sys, {light}; print(sorted(m for m in ('torch', 'hydra', "
                  "'ssl_speech.train', 'ssl_speech.nn') if m in sys.modules))")
    assert out.strip() == "[]"


def test_the_public_names_are_the_library_objects():
    out = _python(
        "import ssl_speech\n"
        "train = ssl_speech.train\n"
        "from ssl_speech.config import compose\n"
        "from ssl_speech.nn.model import SSLModel\n"
        "from ssl_speech.runs.checkpoint import load_model\n"
        "from ssl_speech.runs.export import export_model\n"
        "from ssl_speech.train.api import RunResult\n"
        "assert ssl_speech.compose is compose and ssl_speech.SSLModel is SSLModel\n"
        "assert ssl_speech.load_model is load_model and ssl_speech.export_model is export_model\n"
        "import sys\n"
        "assert ssl_speech.RunResult is RunResult\n"
        "# ssl_speech.train is the training subpackage, callable as ssl_speech.train.api.train\n"
        "assert train is sys.modules['ssl_speech.train'] and callable(train)\n"
        "assert set(ssl_speech.__all__) <= set(dir(ssl_speech))\n"
        "print(ssl_speech.__version__)\n")
    from importlib import metadata
    try:
        expected = metadata.version("ssl_speech")
    except metadata.PackageNotFoundError:
        expected = out.strip()
    assert out.strip() == expected
    with pytest.raises(AssertionError, match="no attribute 'nope'"):
        _python("import ssl_speech; ssl_speech.nope")


def test_train_is_callable_after_its_subpackage_was_imported():
    # ssl_speech.train is also the training subpackage; the subpackage itself is callable
    _python("import ssl_speech.train.api, ssl_speech; assert callable(ssl_speech.train)")
