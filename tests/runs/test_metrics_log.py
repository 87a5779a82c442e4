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
