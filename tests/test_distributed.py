"""Two CPU processes (gloo) with `gather=True` compute the loss and DDP gradients of one process with the whole batch.

Each rank holds half of a batch of 2*HALF samples; a small linear encoder wrapped in DistributedDataParallel embeds both
views. For every loss we compare, on every rank, the loss terms and the encoder's parameter gradients (after DDP's
averaging) with those of a single process on the concatenated batch. A negative control shows that without
`gather=True` the per-rank loss is a different number, so the comparison could fail.

The ranks meet through a file store in the test's temporary folder and gloo listens on the loopback interface only:
no TCP port is picked in advance, so no other process (a Jupyter kernel of the notebook tests, say) can take it
between the choice and the bind.
"""
import datetime, os, time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from revssl.losses import LOSSES

WORLD, HALF, D_IN, D_OUT = 2, 6, 5, 4
TIMEOUT_S = 60


def make_problem(seed=0):
    "Two views of the whole batch and the encoder's initial weights."
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(WORLD * HALF, D_IN, generator=g)
    x2 = x1 + 0.5 * torch.randn(WORLD * HALF, D_IN, generator=g)
    state = nn.Linear(D_IN, D_OUT).state_dict()
    return x1, x2, state


def run_step(model, x1, x2, method, gather):
    "One forward/backward of `model` on both views; the loss terms and the parameter gradients."
    model.zero_grad()
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    terms = LOSSES[method](z1, z2, gather=gather)
    terms.total.backward()
    enc = model.module if isinstance(model, DDP) else model
    grads = {k: p.grad.detach().clone() for k, p in enc.named_parameters()}
    return {k: v.detach().clone() for k, v in terms._asdict().items()}, grads


def worker(rank, store, x1, x2, state, out_dir):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        rows = slice(rank * HALF, (rank + 1) * HALF)
        results = {}
        for method in LOSSES:
            enc = nn.Linear(D_IN, D_OUT)
            enc.load_state_dict(state)
            model = DDP(enc)
            results[method] = run_step(model, x1[rows], x2[rows], method, gather=True)
            results[method + "/local"] = run_step(model, x1[rows], x2[rows], method, gather=False)[0]
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Per-rank results of the 2-process run, and the single-process reference."
    out = tmp_path_factory.mktemp("ddp")
    x1, x2, state = make_problem()
    ctx = mp.start_processes(worker, args=(str(out/"store"), x1, x2, state, str(out)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline: pytest.fail(f"distributed workers did not finish in {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive(): p.terminate()
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    ref = {}
    for method in LOSSES:
        enc = nn.Linear(D_IN, D_OUT)
        enc.load_state_dict(state)
        ref[method] = run_step(enc, x1, x2, method, gather=False)
    return ranks, ref


def close(a, b): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", list(LOSSES))
def test_gathered_loss_equals_whole_batch_loss(runs, method):
    ranks, ref = runs
    ref_terms = ref[method][0]
    for r, res in enumerate(ranks):
        terms = res[method][0]
        assert terms.keys() == ref_terms.keys()
        for k in ref_terms: close(terms[k], ref_terms[k])


@pytest.mark.parametrize("method", list(LOSSES))
def test_ddp_gradients_equal_whole_batch_gradients(runs, method):
    ranks, ref = runs
    ref_grads = ref[method][1]
    assert all(g.abs().sum() > 0 for g in ref_grads.values())
    for res in ranks:
        grads = res[method][1]
        for k in ref_grads: close(grads[k], ref_grads[k])


@pytest.mark.parametrize("method", list(LOSSES))
def test_without_gather_each_rank_sees_a_different_loss(runs, method):
    ranks, ref = runs
    for res in ranks:
        assert not torch.allclose(res[method + "/local"]["total"], ref[method][0]["total"], rtol=1e-3, atol=1e-3)
