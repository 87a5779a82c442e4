"""DDP on CPU with gloo: equivalence to one process with the whole batch, and the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from trainer_fixtures import flat_parameters, make_batches, make_trainer, split, tiny_model

from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.distributed import init_distributed, shutdown_distributed

STEPS = 3
PER_RANK = 2


def all_batches():
    return make_batches(STEPS * 2, 2 * PER_RANK)


def train_and_dump(run_dir: Path, out: Path, batches, accumulate: int) -> None:
    ctx = init_distributed("cpu")
    try:
        trainer = make_trainer(run_dir, batches, ctx=ctx, max_steps=STEPS, accumulate=accumulate)
        trainer.fit(resume=False)
        torch.save(flat_parameters(trainer), out)
    finally:
        shutdown_distributed()


def _worker(rank: int, world: int, port: int, tmp: str, accumulate: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # Each rank sees its half of every global batch, cut into `accumulate` micro-batches.
    mine = [split(b, world, rank) for b in all_batches()[:STEPS]]
    micro = [split(b, accumulate, i) for b in mine for i in range(accumulate)]
    train_and_dump(Path(tmp) / "ddp", Path(tmp) / f"rank{rank}.pt", micro, accumulate)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_two_rank_gloo_equals_one_process_with_the_whole_batch(tmp_path, accumulate):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), accumulate), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert torch.equal(rank0, rank1), "ranks diverged"
    for key in ("RANK", "WORLD_SIZE"):
        os.environ.pop(key, None)
    train_and_dump(tmp_path / "single", tmp_path / "single.pt", all_batches()[:STEPS], 1)
    single = torch.load(tmp_path / "single.pt")
    model, objective = tiny_model()
    initial = torch.nn.utils.parameters_to_vector(
        list(model.parameters()) + list(objective.parameters()))
    assert not torch.allclose(single, initial), "training did not move the parameters"
    torch.testing.assert_close(rank0, single, rtol=1e-5, atol=1e-6)


def test_accumulation_equals_a_larger_batch(tmp_path):
    whole = all_batches()[:STEPS]
    halves = [split(b, 2, i) for b in whole for i in range(2)]
    train_and_dump(tmp_path / "a", tmp_path / "accumulated.pt", halves, accumulate=2)
    train_and_dump(tmp_path / "b", tmp_path / "whole.pt", whole, accumulate=1)
    torch.testing.assert_close(torch.load(tmp_path / "accumulated.pt"),
                               torch.load(tmp_path / "whole.pt"), rtol=1e-5, atol=1e-6)


def _negatives_worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from ssl_speech.objectives.cpc import CPC

    init_distributed("cpu")
    try:
        torch.manual_seed(7)
        objective = CPC(dim=8, num_steps=2, num_negatives=64, head="linear",
                        negatives_across_ranks=True)
        g = torch.Generator().manual_seed(100 + rank)
        z = torch.randn(2, 6, 8, generator=g, requires_grad=True)
        c = torch.randn(2, 6, 8, generator=g)
        torch.manual_seed(200 + rank)
        out = objective.compute(z, c)
        out.loss.backward()
        torch.manual_seed(200 + rank)  # replay the draw to record the indices
        index = objective.core.sample_negatives(z, 4, pool_sequences=4, offset=2 * rank)
        torch.save({"z": z.detach(), "c": c, "index": index, "loss": out.loss.detach(),
                    "grad": z.grad}, Path(tmp) / f"neg{rank}.pt")
        # Both ranks done before either tears the group down: a rank that destroys it while
        # its peer still finishes the gather's backward aborts the peer (gloo).
        torch.distributed.barrier()
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_negatives_across_ranks_pool_latents_and_send_gradients_back(tmp_path):
    from ssl_speech.objectives.cpc import CPC
    from ssl_speech.objectives.scores import info_nce_log_prob, step_scores

    mp.spawn(_negatives_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"neg{r}.pt") for r in range(2)]
    # Negatives reach the other rank's latents.
    assert (ranks[0]["index"] >= 12).any() and (ranks[1]["index"] < 12).any()
    # Reproduce both ranks' losses in one process over the concatenated latents.
    torch.manual_seed(7)
    objective = CPC(dim=8, num_steps=2, num_negatives=64, head="linear")
    pool = torch.cat([r["z"] for r in ranks]).requires_grad_(True)
    total = 0
    for rank, saved in enumerate(ranks):
        predictions = objective.core.heads(saved["c"][:, :4])
        positive, negative = step_scores(predictions, pool[2 * rank:2 * rank + 2],
                                         saved["index"], objective.core.score_scale, "dense", pool)
        loss = -info_nce_log_prob(positive, negative.logsumexp(-1)).mean(dim=(0, 1)).sum()
        torch.testing.assert_close(loss.detach(), saved["loss"])
        total = total + loss
    total.backward()
    for rank, saved in enumerate(ranks):
        torch.testing.assert_close(saved["grad"], pool.grad[2 * rank:2 * rank + 2])


@pytest.mark.slow
def test_torchrun_two_processes_trains_and_checkpoints(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_port", str(free_port()), "-m", "ssl_speech.train",
        "objective=cpc", "data=librispeech", f"data.root={tiny_corpus}",
        "data.train_split=train", "data.dev_split=dev", "data.window=3200",
        "data.batch_size=2", "data.sampler=uniform", "encoder.dim=16", "context.dim=16",
        "objective.num_steps=3", "objective.num_negatives=8", "trainer.max_steps=4",
        "trainer.log_every=1", "trainer.checkpoint_every=2", "trainer.val_every=2",
        "trainer.val_batches=1", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.device=cpu", "trainer.threads=1", "probe.enabled=false",
        f"run_dir={run_dir}", "run_name=ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == [
        "ckpt-00000002.pt", "ckpt-00000004.pt"]
    state = torch.load(ckpt.checkpoint_path(run_dir, 4), weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert "2 process(es)" in done.stderr
    # Only rank 0 prints the run header.
    assert done.stderr.count("training utterances") == 1


def _faulty_peer_worker(rank: int, world: int, port: int, tmp: str, fault: str) -> None:
    import time

    from ssl_speech.train.distributed import barrier
    from ssl_speech.train.errors import CollectiveError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    ctx = init_distributed("cpu", timeout_s=5)
    if rank == 1:
        if fault == "hangs":
            time.sleep(40)
        os._exit(0)  # dies without a word, as a killed rank does
    began = time.monotonic()
    try:
        barrier(ctx, "the test's barrier")
        outcome = "barrier passed"
    except CollectiveError as error:
        outcome = str(error)
    (Path(tmp) / "outcome.txt").write_text(f"{time.monotonic() - began:.1f}\n{outcome}")
    os._exit(0)  # the group is broken: no orderly teardown


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_a_dead_or_hung_rank_stops_the_others_within_the_timeout_naming_the_rank(tmp_path,
                                                                                 fault):
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_faulty_peer_worker,
                         args=(rank, 2, port, str(tmp_path), fault))
             for rank in range(2)]
    for proc in procs:
        proc.start()
    procs[0].join(timeout=120)
    assert procs[0].exitcode == 0
    seconds, message = (tmp_path / "outcome.txt").read_text().split("\n", 1)
    assert float(seconds) < 30  # the 5 s timeout, not the 40 s a hung rank sleeps
    procs[1].kill()
    procs[1].join()
    assert message.startswith("rank 0 of 2: the test's barrier failed or waited more than "
                              "trainer.collective_timeout_s=5 s for the other ranks; another "
                              "rank probably died or hung"), message


def test_collective_failures_are_named_and_model_errors_are_not():
    from ssl_speech.train.distributed import DistributedContext, collective
    from ssl_speech.train.errors import CollectiveError

    ctx = DistributedContext(rank=1, world_size=4, timeout_s=30)

    def fail(message: str, what: str = "the step", computing: bool = True) -> None:
        with collective(what, ctx, computing=computing):
            raise RuntimeError(message)

    with pytest.raises(CollectiveError, match=r"^rank 1 of 4: the step failed or waited more "
                       r"than trainer.collective_timeout_s=30 s .*Connection closed by peer"):
        fail("[gloo/transport/tcp/pair.cc:547] Connection closed by peer")
    with pytest.raises(RuntimeError, match="^mat1 and mat2 shapes cannot be multiplied$"):
        fail("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(CollectiveError, match="rank 1 of 4: a barrier failed"):
        fail("anything from a pure collective", "a barrier", computing=False)
