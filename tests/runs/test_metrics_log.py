import errno
import os
import signal

import pytest

from ssl_speech.runs import metrics_log
from ssl_speech.runs.metrics_log import MetricsLogger, read_metrics


def test_log_and_resume_truncates_later_lines(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in (10, 20, 30):
        log.log(step, {"loss": float(step)})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "lo')  # a line cut by a kill
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_step=20)
    resumed.log(30, {"loss": 3.0})
    records = read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in records] == [(10, 10.0), (20, 20.0), (30, 3.0)]


def test_disabled_logger_writes_nothing(tmp_path):
    MetricsLogger(tmp_path, enabled=False).log(1, {"loss": 1.0})
    assert not (tmp_path / "metrics.jsonl").exists()


def _logged(tmp_path, steps=(10, 20, 30)) -> list[str]:
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in steps:
        log.log(step, {"loss": float(step)})
    log.close()
    return (tmp_path / "metrics.jsonl").read_text().splitlines(keepends=True)


def test_a_kill_at_any_byte_of_an_append_is_repaired_on_resume(tmp_path):
    lines = _logged(tmp_path / "reference", steps=(10, 20, 30, 40))
    torn_line = lines[-1]
    for cut in range(len(torn_line)):  # every byte at which a kill can land
        run = tmp_path / f"cut{cut}"
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(lines[:-1]) + torn_line[:cut])
        whole = cut == len(torn_line) - 1  # only the newline is missing
        assert [r["step"] for r in read_metrics(run)] == [10, 20, 30] + [40] * whole
        resumed = MetricsLogger(run, tensorboard=False, resume_step=30)
        resumed.log(40, {"loss": 4.0})
        assert [(r["step"], r["loss"]) for r in read_metrics(run)] == [
            (10, 10.0), (20, 20.0), (30, 30.0), (40, 4.0)]
        assert (run / "metrics.jsonl").read_text().count("\n") == 4


def test_a_kill_while_the_resume_rewrites_the_log_keeps_the_old_log(tmp_path):
    lines = _logged(tmp_path)
    pid = os.fork()
    if pid == 0:
        try:
            real = os.replace

            def kill(*args, **kwargs):
                os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            os.replace = kill
            MetricsLogger(tmp_path, tensorboard=False, resume_step=10)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines)
    MetricsLogger(tmp_path, tensorboard=False, resume_step=10)
    assert [r["step"] for r in read_metrics(tmp_path)] == [10]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_full_disk_on_append_names_the_step_and_leaves_no_torn_line(tmp_path, monkeypatch):
    lines = _logged(tmp_path)

    class HalfWritten:
        def __init__(self, path, mode):
            self.file = open(path, mode)  # noqa: SIM115 (closed in __exit__)

        def write(self, text):
            self.file.write(text[: len(text) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    log = MetricsLogger(tmp_path, tensorboard=False, resume_step=30)
    monkeypatch.setattr(metrics_log, "open", HalfWritten, raising=False)
    with pytest.raises(metrics_log.MetricsLogError,
                       match=r"train metrics of step 40 .*metrics.jsonl.*disk is full"):
        log.log(40, {"loss": 4.0})
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines)
    monkeypatch.undo()
    log.log(40, {"loss": 4.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20, 30, 40]


def test_tensorboard_asked_for_but_missing_is_said(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.warns(UserWarning, match="tensorboard is not installed.*trainer.tensorboard=false"):
        MetricsLogger(tmp_path, tensorboard=True).close()
