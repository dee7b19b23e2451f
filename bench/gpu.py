"""The README's GPU figures from one prepared command: training, augmentation, the analysis grid and DDP, each part
under its own time cap, written as one markdown table and the raw JSON.

    PYTHONPATH=. python bench/gpu.py --out runs/gpu           # a CUDA machine: the full sizes, under 8 minutes
    python bench/gpu.py --quick --out /tmp/gpu                 # the CPU: tiny sizes, the same code paths (the tests)
    python bench/gpu.py --out runs/gpu --parts train,probe     # some of the parts only

Parts, in this order (paper §3, A.1-A.3):
- train: views/s of RES-10-250 VICReg at batch 256 (the `paper` preset): revssl's step (bf16 autocast, channels_last,
  images resident on the device, batched augmentation) eager, as one replayed CUDA graph (`revssl.train.GraphedStep`,
  what `cuda_graph=True` runs), with torch.compile (default mode) and with torch.compile(mode="reduce-overhead")
  (inductor's own CUDA graphs, of the model only), against the common style (fp32, eager, per-image torchvision
  augmentation in DataLoader workers) in the same run; FLOPs per view counted by torch.utils.flop_counter on one
  forward+backward, the achieved TFLOP/s, the extrapolated `paper` run, and the step-time model that
  `revssl.studies.gpu_hours` prices runs with: the eager step at batch 256 and at 4 x 256 give a FLOP rate and a
  per-step overhead (time = FLOPs / rate + overhead).
- memory: channels_last against contiguous for the paper's two widths in bf16 (RES-10-250 and RES-5-1000, the
  model step alone on fixed views), views/s of each.
- augment: views/s of the batched SimCLR augmentation at 32x32, batch 512 (the default apply, and the sync-free apply
  of the graphed step from uniforms drawn into a reused buffer), and an epoch's peak GPU memory.
- probe: the analysis grid of one paper-size checkpoint (synthetic features of the paper's shapes: 11 layers x 250
  features; 50,000 train and 10,000 test images with 100 classes and 20 superclasses; 500 sample-level images with
  100 train and 20 test views each): the fast probe on the device over the whole grid, then LinearSVC (CPU) against it
  on a 5,000-row subset of some layers, cheapest target sets first, while the part's time lasts.
- ddp: with >= 2 GPUs, a tiny `revssl.train.train` run under torchrun (NCCL) whose logged losses match one process;
  skipped with one GPU. The quick mode runs it on the CPU with gloo and 2 processes.

A part that reaches its cap stops early, reports what it measured and is marked `capped`; a part that fails is
recorded with its error and the next part runs. The exit code is non-zero only when the script itself is broken or
the arguments are bad (one message, before any work). Rates are medians over timed windows after warm-up steps.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall shared CPUs
import argparse, csv, gc, itertools, json, math, platform, signal, statistics, subprocess, sys, tempfile, time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                 # revssl importable from the checkout, installed or not
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from revssl.config import apply_overrides, get_preset, model_name  # noqa: E402
from revssl.datasets import IMAGENET_MEAN, IMAGENET_STD, dataset_info  # noqa: E402
from revssl.augment import SimCLRAugment, draw_uniforms, torchvision_two_view_loader, two_view_batches  # noqa: E402
from revssl.losses import vicreg_loss  # noqa: E402
from revssl.models import build_model  # noqa: E402
from revssl.probes import linear_probe  # noqa: E402
from revssl.train import (GraphedStep, Run, build_augment, capture_cuda_graph, run_step_as_replay, make_optimizer,  # noqa: E402
                          make_scheduler, ssl_step, train, train_step)

PARTS = ("train", "memory", "augment", "probe", "ddp")
CAPS_S = {"train": 235, "memory": 45, "augment": 30, "probe": 75, "ddp": 40}   # soft caps of the full run, seconds
QUICK_CAPS_S = {"train": 40, "memory": 10, "augment": 8, "probe": 12, "ddp": 60}
GRACE_S = {False: 10, True: 5}      # the hard stop (SIGALRM) comes this long after a part's soft cap: full, quick
TOTAL_GOAL_S = 480                  # the whole command on one GPU (the hard caps add up to 475 s)
VIEWS_GOAL, AUG_GOAL, PAPER_RUN_GOAL_MIN, PROBE_DIFF_GOAL, DDP_DIFF_GOAL = 35_000, 200_000, 48, 0.01, 1e-4
DDP_SETS = ("train_subset=128", "batch_size=32", "epochs=2", "analysis_epochs=0,2", "width=8", "proj_dim=16")
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True, kw_only=True)
class Sizes:
    "Every size the parts use: the full run's on a GPU, tiny ones for --quick."
    depth: int; width: int; proj_dim: int; batch: int; images: int            # train: the model and its data
    warmup: int; steps: int; ref_steps: int; repeats: int; flop_batch: int       # train: timing, FLOP count
    big_batch: int                                                               # train: the step-time model's 2nd batch
    mem_shapes: tuple; mem_steps: int                                            # memory: (depth, width, proj_dim)s
    aug_batch: int; aug_images: int; aug_repeats: int                            # augment
    n_train: int; n_test: int; layers: int; dim: int; classes: int; supers: int  # probe: one checkpoint's grid
    ids: int; k_train: int; k_test: int; latent: int; svc_rows: int


FULL = Sizes(depth=10, width=250, proj_dim=1000, batch=256, images=50_000,
             warmup=5, steps=50, ref_steps=20, repeats=3, flop_batch=64, big_batch=1024,
             mem_shapes=((10, 250, 1000), (5, 1000, 4000)), mem_steps=20,
             aug_batch=512, aug_images=50_000, aug_repeats=3,
             n_train=50_000, n_test=10_000, layers=11, dim=250, classes=100, supers=20,
             ids=500, k_train=100, k_test=20, latent=32, svc_rows=5_000)
QUICK = Sizes(depth=2, width=16, proj_dim=64, batch=16, images=64,
              warmup=1, steps=3, ref_steps=2, repeats=2, flop_batch=8, big_batch=32,
              mem_shapes=((2, 16, 64), (1, 24, 96)), mem_steps=2,
              aug_batch=32, aug_images=256, aug_repeats=2,
              n_train=400, n_test=200, layers=2, dim=16, classes=10, supers=5,
              ids=10, k_train=10, k_test=4, latent=8, svc_rows=200)


# ---- pure helpers: arithmetic, goals, the table --------------------------------------------------------------------

def paper_run_seconds(views_per_s:float, # measured training rate
                      epochs:int=1000, n_train:int=50_000, batch:int=256, # the `paper` preset (A.3)
                     )->float:
    "Seconds of a run's training steps: full batches only (as the loop takes them), two views per image."
    return epochs * (n_train // batch) * batch * 2 / views_per_s


def tflops(views_per_s:float, flops_per_view:float)->float:
    "Achieved TFLOP/s at `views_per_s` when each view costs `flops_per_view`."
    return views_per_s * flops_per_view / 1e12


def goal_met(value, goal:dict|None)->bool|None:
    "Whether a numeric `value` meets `goal` ({'op': '>=' or '<=', 'value': x}); None when there is nothing to judge."
    if goal is None or isinstance(value, bool) or not isinstance(value, (int, float)): return None
    return value >= goal["value"] if goal["op"] == ">=" else value <= goal["value"]


def fmt_value(v, unit:str="")->str:
    "A value with its unit as the table shows it."
    if v is None: return "—"
    if isinstance(v, (bool, str)): return str(v)
    if unit in ("views/s", "MiB"): return f"{v:,.0f} {unit}"
    if unit == "x": return f"{v:.2f}×"
    if unit in ("s", "min") and not isinstance(v, int): return f"{v:.3g} {unit}" if v < 10 else f"{v:,.1f} {unit}"
    return (f"{v:,}" if isinstance(v, int) else f"{v:.3g}") + (f" {unit}" if unit else "")


def goal_text(goal:dict|None, unit:str="")->str:
    "A goal as the table shows it, e.g. '≥ 28,000 views/s'."
    return "" if goal is None else f"{'≥' if goal['op'] == '>=' else '≤'} {fmt_value(goal['value'], unit)}"


def md_cell(x)->str:
    "Text safe inside one markdown table cell: pipes escaped, line breaks and runs of spaces collapsed."
    return " ".join(str(x).split()).replace("|", "\\|")


def metric_row(part:str, r:dict)->tuple:
    "(part, metric, value, goal, note) of one recorded metric; the note starts with met / missed when there is a goal."
    met = {True: "met", False: "missed", None: ""}[r["met"]]
    return (part, r["metric"], fmt_value(r["value"], r["unit"]), goal_text(r["goal"], r["unit"]),
            "; ".join(t for t in (met, r["note"]) if t))


def table_rows(result:dict)->list[tuple]:
    "Rows of the table: the run's device and software, each part's metrics and wall time, the total time."
    m, total = result["meta"], {"op": "<=", "value": TOTAL_GOAL_S}
    rows = [("run", "device", m["device_name"], "", f"{m['mode']} sizes"),
            ("run", "software", f"torch {m['torch']}, torchvision {m['torchvision']}, scikit-learn {m['sklearn']}",
             "", f"Python {m['python']}, CUDA {m['cuda']}, {m['cpus']} CPUs")]
    for name, p in result["parts"].items():
        if p["status"] == "skipped": rows.append((name, "skipped", "—", "", p["skip"])); continue
        rows += [metric_row(name, r) for r in p["metrics"]]
        status = p["status"] + (f": {p['error']}" if p["error"] else "")
        rows.append((name, "part wall time", fmt_value(p["seconds"], "s"), f"cap {p['cap_s']:.0f} s", status))
    rows.append(metric_row("run", dict(metric="total wall time", value=m["total_s"], unit="s", goal=total,
                                       met=goal_met(m["total_s"], total), note="")))
    return rows


def markdown_table(rows:list[tuple])->str:
    "One markdown table with the columns part, metric, value, goal, note."
    lines = ["| part | metric | value | goal | note |", "|---|---|---:|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]) + "\n"


def loss_rel_diff(a:list[dict], b:list[dict])->float:
    "Largest relative difference between the loss terms of two train_log.csv tables over the same epochs."
    if [r["epoch"] for r in a] != [r["epoch"] for r in b]:
        raise ValueError(f"the logs cover different epochs: {[r['epoch'] for r in a]} vs {[r['epoch'] for r in b]}")
    terms = [k for k in b[0] if k not in ("epoch", "lr", "time_s", "views_per_s")]
    return max(abs(float(x[k]) - float(y[k])) / max(abs(float(y[k])), 1e-12) for x, y in zip(a, b) for k in terms)


def ddp_command(nproc:int, out:Path, device:str)->list[str]:
    "The command of the tiny DDP comparison: this script's worker, under torchrun when `nproc` > 1."
    worker = [str(Path(__file__).resolve()), "--ddp-worker", str(out), "--device", device]
    if nproc == 1: return [sys.executable, *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *worker]


# ---- time caps and measurement -------------------------------------------------------------------------------------

class PartCapped(Exception):
    "A part ran past its hard time cap."


class Budget:
    "A part's wall-clock cap: soft checks between measurements, a hard stop (SIGALRM) `grace` seconds after it."
    def __init__(self, cap:float, grace:float):
        self.cap, self.grace, self.t0, self.soft = cap, grace, time.monotonic(), False
    def elapsed(self)->float: return time.monotonic() - self.t0
    def left(self)->float: return self.cap - self.elapsed()
    def deadline(self, frac:float=1.0)->float: return self.t0 + frac * self.cap   # on time.monotonic's clock

    @contextmanager
    def hard(self):
        "Raise `PartCapped` inside the block once cap + grace seconds have passed (main thread only)."
        def fire(signum, frame): raise PartCapped(f"stopped by the hard cap ({self.cap + self.grace:.0f} s)")
        old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, max(self.cap + self.grace - self.elapsed(), 1e-3))
        try: yield self
        finally: signal.setitimer(signal.ITIMER_REAL, 0); signal.signal(signal.SIGALRM, old)


def sync(dev:torch.device):
    "Wait for the device's queued work (timings on CUDA are otherwise only launch times)."
    if dev.type == "cuda": torch.cuda.synchronize(dev)


def measure(step, # one training step (or any unit of work)
            views:int, # views one call of `step` processes
            warmup:int, steps:int, repeats:int, # untimed calls first, then `repeats` windows of `steps` calls
            deadline:float, # time.monotonic() after which no call starts (except the first window's first)
            dev:torch.device):
    "(median views/s over the timed windows, windows timed, whether the deadline cut them short)."
    for _ in range(warmup): step()
    sync(dev)
    rates, n = [], 0
    for _ in range(repeats):
        t, n = time.perf_counter(), 0
        while n < steps and (time.monotonic() < deadline or (not rates and n == 0)):
            step(); n += 1
        sync(dev)
        rates.append(views * n / (time.perf_counter() - t))
        if time.monotonic() >= deadline: break
    return statistics.median(rates), len(rates), len(rates) < repeats or n < steps


def flops_per_view(model, views:torch.Tensor, loss=lambda z: z.float().sum())->float:
    "FLOPs of one forward+backward per view, as torch.utils.flop_counter counts them (matmuls, convolutions)."
    with FlopCounterMode(display=False) as fc:
        loss(model(views)).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / len(views)


_T0 = time.monotonic()
def log(msg:str):
    "A progress line with the clock time and the seconds since the start."
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


@dataclass
class Ctx:
    "What every part needs: device, sizes, quick flag, output folder, workers; the running part's budget and record."
    dev: torch.device; sizes: Sizes; quick: bool; out: Path; workers: int; budget: Budget = None; rec: dict = None

    def add(self, metric:str, value, unit:str="", goal:dict|None=None, note:str=""):
        "Record one metric of the running part (kept when the part stops later). Goals apply to the full sizes."
        g = None if self.quick else goal
        row = dict(metric=metric, value=value, unit=unit, goal=g, met=goal_met(value, g), note=note)
        self.rec["metrics"].append(row)
        log(f"  {metric}: {fmt_value(value, unit)}" + (f"  ({note})" if note else ""))

    def attempt(self, what:str, fn):
        "`fn()`, or None after recording its failure as the row `what` (the part goes on; a hard cap still stops it)."
        try: return fn()
        except PartCapped: raise
        except Exception as e:
            err = f"{type(e).__name__}: {e}"[:300]
            self.rec["failures"].append(f"{what}: {err}"); self.rec["traceback"] = traceback.format_exc()[-4000:]
            self.add(what, None, note=f"failed: {err}")


# ---- part 1: training ----------------------------------------------------------------------------------------------

def train_config(s:Sizes, dev:torch.device):
    "The `paper` preset (RES-10-250 VICReg, batch 256, A.3) at the sizes `s`, on `dev`."
    return replace(get_preset("paper"), depth=s.depth, width=s.width, proj_dim=s.proj_dim, batch_size=s.batch,
                   device=dev.type)


def revssl_step(cfg, xs:torch.Tensor, dev:torch.device, backend:str|None, mode:str|None=None):
    "One step of revssl's loop as a closure: bf16 autocast, channels_last, compiled with `backend` (None: eager)."
    model = build_model(cfg, 3, 100, 32).to(dev).to(memory_format=torch.channels_last)
    fwd = (torch.compile(model, mode=mode) if mode else torch.compile(model, backend=backend)) if backend else model
    opt, aug = make_optimizer(cfg, model.parameters()), build_augment(cfg, dataset_info(cfg.dataset), dev)
    sched, gen = make_scheduler(opt, 10 ** 6), torch.Generator(device=dev).manual_seed(0)
    perm, it, b = torch.randperm(len(xs), device=dev), itertools.count(), cfg.batch_size
    def step():
        k = next(it) % (len(xs) // b)
        if mode: torch.compiler.cudagraph_mark_step_begin()     # a new training step for inductor's CUDA graphs
        terms = ssl_step(fwd, aug, xs[perm[k * b:(k + 1) * b]], cfg, gen, True)   # amp: autocast on xs's device
        opt.zero_grad(set_to_none=True); terms["total"].backward(); opt.step(); sched.step()
        step.loss = terms["total"].detach()
    return step


def graphed_step(cfg, xs:torch.Tensor, dev:torch.device):
    "revssl's graphed step (`cuda_graph=True`) as a closure: the step recorded once and replayed from then on."
    model = build_model(cfg, 3, 100, 32).to(dev).to(memory_format=torch.channels_last)
    opt, aug = make_optimizer(cfg, model.parameters()), build_augment(cfg, dataset_info(cfg.dataset), dev)
    sched, gen, b = make_scheduler(opt, 10 ** 6), torch.Generator(device=dev).manual_seed(0), cfg.batch_size
    r = Run(cfg, Path("."), dev, xs, torch.zeros(len(xs), dtype=torch.long, device=dev), model, aug, opt, sched, gen,
            True, len(xs) // b, fwd=model)
    r.graph = GraphedStep(r, capture=capture_cuda_graph if dev.type == "cuda" else run_step_as_replay)
    perm, it = torch.randperm(len(xs), device=dev), itertools.count()
    def step():
        k = next(it) % r.steps
        step.loss = train_step(r, perm[k * b:(k + 1) * b])["total"]; sched.step()
        if r.graph.failed: raise RuntimeError(f"the capture failed: {r.graph.failed}")
    return step


def model_step(cfg, views:torch.Tensor, dev:torch.device, channels_last:bool):
    "The model's step alone on fixed views (bf16 autocast, VICReg, SGD) as a closure, in either memory format."
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg, 3, 100, 32).to(dev).to(memory_format=fmt)
    views, opt = views.contiguous(memory_format=fmt), make_optimizer(cfg, model.parameters())
    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            z = model(views)
        loss = vicreg_loss(*z.float().chunk(2)).total
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        step.loss = loss.detach()
    return step


def reference_step(cfg, images:torch.Tensor, dev:torch.device, workers:int):
    "One common-style step as a closure: fp32, eager, torchvision per-image views from DataLoader workers."
    info = dataset_info(cfg.dataset)
    model = build_model(cfg, 3, 100, 32).to(dev)
    opt = make_optimizer(cfg, model.parameters())
    dl = torchvision_two_view_loader(images, cfg.batch_size, 32, info.mean, info.std, num_workers=workers)
    if workers: dl.timeout = 60                                 # a stuck worker raises instead of hanging the part
    batches = (b for _ in itertools.count() for b in dl)        # the loader again and again; nothing cached
    def step():
        v1, v2 = next(batches)
        loss = vicreg_loss(model(v1.to(dev)), model(v2.to(dev))).total
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        step.loss = loss.detach()
    step.close = batches.close                                  # stops the workers
    return step


def timed_variant(c:Ctx, name:str, step, frac:float, steps:int, batch:int|None=None)->float:
    "Views/s of one training variant, measured until `frac` of the part's cap; its last loss must be finite."
    s, t = c.sizes, time.monotonic()
    rate, windows, cut = measure(step, 2 * (batch or s.batch), s.warmup, steps, s.repeats, c.budget.deadline(frac),
                                 c.dev)
    loss = float(step.loss)
    if not math.isfinite(loss): raise FloatingPointError(f"{name}: non-finite loss {loss}")
    c.budget.soft |= cut
    log(f"  {name}: {windows} window(s) in {time.monotonic() - t:.1f} s, last loss {loss:.4g}")
    return rate


def count_flops(c:Ctx, cfg)->float:
    "FLOPs per view of one training forward+backward (VICReg loss included) of a fresh model, recorded in GFLOP."
    model = build_model(cfg, 3, 100, 32).to(c.dev).to(memory_format=torch.channels_last)
    views = torch.randn(2 * c.sizes.flop_batch, 3, 32, 32, device=c.dev).to(memory_format=torch.channels_last)
    fpv = flops_per_view(model, views, lambda z: vicreg_loss(*z.float().chunk(2)).total)
    c.add("FLOPs per view (forward+backward)", fpv / 1e9, "GFLOP", note="torch.utils.flop_counter, with the loss")
    return fpv


def reference_rate(c:Ctx, cfg, images:torch.Tensor)->float:
    "Views/s of the common style, recorded."
    ref = reference_step(cfg, images, c.dev, c.workers)
    try: rate = timed_variant(c, "reference", ref, 0.4, c.sizes.ref_steps)
    finally: ref.close()
    c.add("views/s, reference", rate, "views/s", note=f"{model_name(cfg)} VICReg, batch {cfg.batch_size}; fp32 "
          f"(cuDNN's default TF32 on CUDA), eager, torchvision per-image views in {c.workers} DataLoader worker(s)")
    return rate


def compile_backend(dev:torch.device)->str:
    "inductor on CUDA; aot_eager on the CPU (dynamo and AOTAutograd without a C++ build). Inductor must import."
    import torch._dynamo, torch._inductor.config  # noqa: F401  (the GPU branch's modules, imported on the CPU too)
    if "inductor" not in torch._dynamo.list_backends(): raise RuntimeError("torch.compile has no inductor backend")
    return "inductor" if dev.type == "cuda" else "aot_eager"


VARIANTS = {"eager": "bf16 autocast, channels_last, images resident on the device, batched augmentation",
            "graphed": "the whole step (augmentation, forward, loss, backward, SGD) replayed from one CUDA graph",
            "compiled": "torch.compile of the model, default mode",
            "compiled reduce-overhead": "torch.compile of the model, mode reduce-overhead (inductor's CUDA graphs)"}


def revssl_rate(c:Ctx, cfg, xs:torch.Tensor, which:str, frac:float)->float:
    "Views/s of one variant of revssl's step (a key of VARIANTS), recorded with its peak memory or compile time."
    dev, t = c.dev, time.monotonic()
    backend = compile_backend(dev) if which.startswith("compiled") else None
    mode = "reduce-overhead" if which == "compiled reduce-overhead" and dev.type == "cuda" else None
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
    step = graphed_step(cfg, xs, dev) if which == "graphed" else revssl_step(cfg, xs, dev, backend, mode)
    if backend:
        step(); sync(dev)                               # the first call compiles forward and backward
        c.add(f"torch.compile warm-up (first step), {which}", time.monotonic() - t, "s",
              note=f"mode {mode}" if mode else f"backend {backend}")
    rate = timed_variant(c, f"revssl {which}", step, frac, c.sizes.steps)
    c.add(f"views/s, revssl {which}", rate, "views/s", {"op": ">=", "value": VIEWS_GOAL}, VARIANTS[which]
          + ("" if dev.type == "cuda" or which not in ("graphed", "compiled reduce-overhead") else
             "; on the CPU the same code without a graph"))
    if dev.type == "cuda":
        c.add(f"peak GPU memory, revssl {which}", torch.cuda.max_memory_allocated(dev) / 2 ** 20, "MiB")
    return rate


def add_rate_rows(c:Ctx, which:str, rate:float, ref:float|None, fpv:float|None):
    "Speed-up, achieved TFLOP/s and the extrapolated `paper` run of one revssl variant (what its inputs allow)."
    if ref: c.add(f"speed-up over the reference, {which}", rate / ref, "x", note="same run, same model")
    if fpv: c.add(f"achieved TFLOP/s, {which}", tflops(rate, fpv), "TFLOP/s", note="views/s x FLOPs per view")
    c.add(f"`paper` run, extrapolated, {which}", paper_run_seconds(rate) / 60, "min",
          {"op": "<=", "value": PAPER_RUN_GOAL_MIN}, f"1000 epochs x {50_000 // 256} steps x 512 views; the steps only")


def step_time_model(rate_small:float, rate_big:float, # views/s at batches `small` and `big`
                    small:int, big:int, flops_per_view:float)->tuple[float, float]:
    "(FLOP/s, seconds of overhead per step) of the model time = FLOPs / rate + overhead through two step times."
    t_small, t_big = 2 * small / rate_small, 2 * big / rate_big              # seconds per step (two views per image)
    rate = 2 * (big - small) * flops_per_view / (t_big - t_small)
    return rate, t_small - 2 * small * flops_per_view / rate


def add_step_model(c:Ctx, cfg, xs:torch.Tensor, eager:float, fpv:float):
    "The eager step at `big_batch` too, and the step-time model through both (what `gpu_hours` assumes)."
    big = replace(cfg, batch_size=c.sizes.big_batch)
    step = revssl_step(big, xs, c.dev, None)
    rate = timed_variant(c, "revssl eager, big batch", step, 0.3, c.sizes.steps, big.batch_size)
    c.add(f"views/s, revssl eager, batch {big.batch_size}", rate, "views/s", note="for the step-time model")
    flop_rate, overhead = step_time_model(eager, rate, cfg.batch_size, big.batch_size, fpv)
    c.add("step-time model: FLOP rate", flop_rate / 1e12, "TFLOP/s",
          note=f"through the eager steps at batch {cfg.batch_size} and {big.batch_size}")
    c.add("step-time model: overhead per step", overhead * 1e3, "ms", note="what gpu_hours adds to every step")


def part_train(c:Ctx):
    "Training views/s of every variant of revssl's step and of the common style; FLOPs, TFLOP/s, the step-time model."
    s, cfg = c.sizes, train_config(c.sizes, c.dev)
    images = torch.randint(0, 256, (s.images, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    xs = images.to(c.dev)
    fpv = c.attempt("FLOPs per view (forward+backward)", lambda: count_flops(c, cfg))
    eager = c.attempt("views/s, revssl eager", lambda: revssl_rate(c, cfg, xs, "eager", 0.1))
    ref = c.attempt("views/s, reference", lambda: reference_rate(c, cfg, images))
    if eager: add_rate_rows(c, "eager", eager, ref, fpv)
    if eager and fpv: c.attempt("step-time model", lambda: add_step_model(c, cfg, xs, eager, fpv))
    for which, frac in (("graphed", 0.4), ("compiled", 0.7), ("compiled reduce-overhead", 1.0)):
        rate = c.attempt(f"views/s, revssl {which}", lambda: revssl_rate(c, cfg, xs, which, frac))
        if rate: add_rate_rows(c, which, rate, ref, fpv)


# ---- part 2: memory format -----------------------------------------------------------------------------------------

def part_memory(c:Ctx):
    "channels_last against contiguous, bf16, for the paper's widths: the model step alone on fixed views."
    s = c.sizes
    for k, (depth, width, proj) in enumerate(s.mem_shapes):
        cfg = replace(train_config(s, c.dev), depth=depth, width=width, proj_dim=proj)
        views = torch.randn(2 * s.batch, 3, 32, 32, device=c.dev)
        rates = {}
        for last in (True, False):
            name = f"{model_name(cfg)}, {'channels_last' if last else 'contiguous'}"
            frac = (2 * k + len(rates) + 1) / (2 * len(s.mem_shapes))
            rates[last] = c.attempt(f"views/s, {name}", lambda: timed_variant(
                c, name, model_step(cfg, views, c.dev, last), frac, s.mem_steps))
            if rates[last]: c.add(f"views/s, {name}", rates[last], "views/s", note=f"model step alone, batch {s.batch}, bf16")
        if rates[True] and rates[False]:
            c.add(f"{model_name(cfg)}: channels_last / contiguous", rates[True] / rates[False], "x",
                  note="> 1: channels_last is faster")


# ---- part 3: augmentation ------------------------------------------------------------------------------------------

def part_augment(c:Ctx):
    "Views/s of the batched SimCLR augmentation at 32x32 (batch 512 in full) and an epoch's peak GPU memory."
    s, dev = c.sizes, c.dev
    x = torch.randint(0, 256, (s.aug_images, 3, 32, 32), dtype=torch.uint8, device=dev)
    aug, gen = SimCLRAugment(32, IMAGENET_MEAN, IMAGENET_STD), torch.Generator(device=dev).manual_seed(0)
    def epoch():
        for _ in two_view_batches(x, s.aug_batch, aug, gen): pass
    rate, _, cut = measure(epoch, 2 * (s.aug_images // s.aug_batch) * s.aug_batch, 1, 1, s.aug_repeats,
                           c.budget.deadline(0.8), dev)
    c.budget.soft |= cut
    c.add(f"views/s, 32x32, batch {s.aug_batch}", rate, "views/s", {"op": ">=", "value": AUG_GOAL},
          f"median of epochs over {s.aug_images:,} uint8 images resident on {dev.type}")
    buf, xb = draw_uniforms(None, 2 * s.aug_batch, gen.device), torch.cat([x[:s.aug_batch]] * 2)
    def sync_free():
        aug.apply(xb, aug.params_of(draw_uniforms(gen, len(xb), out=buf), 32, 32), sync_free=True)
    rate, _, cut = measure(sync_free, len(xb), 1, s.aug_images // s.aug_batch, s.aug_repeats, c.budget.deadline(0.9),
                           dev)
    c.budget.soft |= cut
    c.add(f"views/s, sync-free apply, batch {2 * s.aug_batch}", rate, "views/s",
          note="the graphed step's augmentation, eager: uniforms into a reused buffer, no host sync")
    if dev.type != "cuda": return c.add("peak GPU memory over an epoch", None, "MiB", note="not measured: no GPU")
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    epoch(); sync(dev)
    c.add("peak GPU memory over an epoch", torch.cuda.max_memory_allocated(dev) / 2 ** 20, "MiB",
          note=f"{base / 2 ** 20:,.0f} MiB of it the resident images")


# ---- part 4: the analysis grid -------------------------------------------------------------------------------------

PAIRS = (("train", "test"), ("sample_train", "sample_test"))     # (fit on, score on) of one layer's probes


def synthetic_grid(s:Sizes, dev:torch.device, seed:int=0)->tuple[dict, dict]:
    "Features {set: {layer: [N, D]}} and labels {set: {target: [N]}} of hierarchical Gaussian mixtures, paper shapes."
    g = torch.Generator(device=dev).manual_seed(seed)
    rn = lambda *shape: torch.randn(*shape, generator=g, device=dev)
    ri = lambda k, n: torch.randint(0, k, (n,), generator=g, device=dev)
    sup_of = torch.arange(s.classes, device=dev) % s.supers
    mu = rn(s.supers, s.latent)[sup_of] + 0.8 * rn(s.classes, s.latent)           # classes near their superclass
    y_tr, y_te, y_id = ri(s.classes, s.n_train), ri(s.classes, s.n_test), ri(s.classes, s.ids)
    u_id = rn(s.ids, s.latent)
    ids = {"sample_train": torch.arange(s.ids, device=dev).repeat_interleave(s.k_train),
           "sample_test": torch.arange(s.ids, device=dev).repeat_interleave(s.k_test)}
    images = {"train": (y_tr, rn(s.n_train, s.latent)), "test": (y_te, rn(s.n_test, s.latent)),
              **{k: (y_id[i], u_id[i]) for k, i in ids.items()}}     # a sample's views share its image's latent
    feats = {k: {} for k in images}
    for layer in range(s.layers):                                     # class signal grows with depth; views jitter
        a, proj = 0.3 + 0.5 * layer / max(1, s.layers - 1), rn(s.latent, s.dim) / math.sqrt(s.latent)
        for k, (y, u) in images.items():
            feats[k][layer] = (a * mu[y] + u + rn(len(y), s.latent)) @ proj + 0.7 * rn(len(y), s.dim)
    labels = {"train": {"class": y_tr, "superclass": sup_of[y_tr]}, "test": {"class": y_te, "superclass": sup_of[y_te]},
              **{k: {"sample": i} for k, i in ids.items()}}
    return feats, labels


def fast_grid(c:Ctx, feats:dict, labels:dict)->tuple[float, int]:
    "(seconds, layers done) of the fast probe over every layer and target set, until 45% of the part's cap."
    fast = lambda tr, te, layer: linear_probe(feats[tr][layer], labels[tr], feats[te][layer], labels[te], method="fast")
    fast("train", "test", 0); sync(c.dev)                                # warm-up: kernels, allocator
    t, done = time.perf_counter(), 0
    for layer in range(c.sizes.layers):
        for tr, te in PAIRS: fast(tr, te, layer)
        done += 1
        if time.monotonic() > c.budget.deadline(0.45): break
    sync(c.dev)
    return time.perf_counter() - t, done


def svc_subset(feats:dict, labels:dict, layer:int, tr:str, te:str, rows:int)->tuple:
    "CPU copies of one layer's features and labels: `rows` seeded train rows, all test rows."
    idx = torch.randperm(len(feats[tr][layer]), generator=torch.Generator().manual_seed(layer))[:rows]
    idx = idx.to(feats[tr][layer].device)
    return (feats[tr][layer][idx].cpu(), {h: y[idx].cpu() for h, y in labels[tr].items()},
            feats[te][layer].cpu(), {h: y.cpu() for h, y in labels[te].items()})


def svc_jobs(c:Ctx, feats:dict, labels:dict)->list[tuple]:
    "(cost, layer, target, subset, fast accuracy, fast seconds) of the last, first and middle layers, cheapest first."
    jobs = []
    for layer in dict.fromkeys((c.sizes.layers - 1, 0, c.sizes.layers // 2)):
        for tr, te in PAIRS:
            sub = svc_subset(feats, labels, layer, tr, te, c.sizes.svc_rows)
            sync(c.dev); t = time.perf_counter()
            acc = linear_probe(*(x.to(c.dev) if torch.is_tensor(x) else {h: y.to(c.dev) for h, y in x.items()}
                                 for x in sub), method="fast")
            sync(c.dev); dt = time.perf_counter() - t
            jobs += [((int(sub[1][h].max()) + 1) * len(sub[0]), layer, h, sub, acc[h], dt / len(acc)) for h in acc]
    return sorted(jobs, key=lambda j: j[:3])


def compare_with_linearsvc(c:Ctx, feats:dict, labels:dict):
    "LinearSVC (CPU) against the fast probe on the same subsets, cheapest first; skips what would outlast the cap."
    diffs, t_svc, t_fast, per_unit = [], 0.0, 0.0, None
    for cost, layer, h, (xtr, ytr, xte, yte), acc_fast, tf in svc_jobs(c, feats, labels):
        if per_unit is not None and per_unit * cost > c.budget.left():
            c.budget.soft = True
            log(f"  layer {layer} {h}: LinearSVC skipped (about {per_unit * cost:.0f} s)"); continue
        t = time.perf_counter()
        acc = linear_probe(xtr, ytr[h], xte, yte[h], method="linearsvc")
        dt = time.perf_counter() - t
        per_unit, t_svc, t_fast = dt / cost, t_svc + dt, t_fast + tf
        diffs.append((abs(acc - acc_fast), layer, h))
        log(f"  layer {layer} {h}: LinearSVC {acc:.4f} in {dt:.1f} s, fast {acc_fast:.4f}")
    worst = max(diffs)
    c.add("largest accuracy difference, fast vs LinearSVC", worst[0], "", {"op": "<=", "value": PROBE_DIFF_GOAL},
          f"{len(diffs)} target sets on {c.sizes.svc_rows:,} train rows; worst: layer {worst[1]}, {worst[2]}")
    c.add("LinearSVC time / fast time on those sets", t_svc / t_fast, "x", note=f"LinearSVC {t_svc:.1f} s on the "
          f"CPU, fast {t_fast:.2f} s on {c.dev.type} (a call's time shared by its target sets)")


def part_probe(c:Ctx):
    "The fast probe over one paper-size checkpoint's grid on the device; LinearSVC against it on row subsets."
    s = c.sizes
    feats, labels = synthetic_grid(s, c.dev)
    t, done = fast_grid(c, feats, labels)
    c.budget.soft |= done < s.layers
    n = done * sum(len(labels[tr]) for tr, _ in PAIRS)
    c.add(f"fast probe, whole grid on {c.dev.type}", t * s.layers / done, "s", note=(f"{s.layers} layers x {s.dim} "
          f"features, {s.layers * n // done} target sets (class, superclass: {s.n_train:,} -> {s.n_test:,} images; "
          f"sample: {s.ids} images x {s.k_train}/{s.k_test} views)")
          + ("" if done == s.layers else f"; extrapolated from {done} layers"))
    c.add("fast probe per target set (amortised)", t / n, "s")
    c.attempt("largest accuracy difference, fast vs LinearSVC", lambda: compare_with_linearsvc(c, feats, labels))


# ---- part 5: DDP ---------------------------------------------------------------------------------------------------

def run_logged(cmd:list, timeout:float)->tuple[int, str]:
    "Run `cmd` in its own process group, stopping the group on a timeout or error: (exit code, its last lines)."
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    try: out, _ = p.communicate(timeout=max(timeout, 1))
    except BaseException:                                     # a timeout, or the part's hard cap
        os.killpg(p.pid, signal.SIGTERM)
        try: p.communicate(timeout=10)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.communicate()
        raise
    return p.returncode, "\n".join(out.splitlines()[-15:])


def read_log(run:Path)->list[dict]:
    "The rows of a run's train_log.csv."
    with open(run / "train_log.csv") as f: return list(csv.DictReader(f))


def ddp_skip(dev:torch.device, quick:bool)->str|None:
    "Why the DDP part cannot run here (None: it can)."
    if dev.type == "cuda" and torch.cuda.device_count() < 2: return f"skipped: {torch.cuda.device_count()} GPU"
    if dev.type == "cpu" and not quick: return "skipped: the full run's DDP part needs >= 2 GPUs"
    return None


def ddp_worker(out:Path, device:str):
    "One rank (or the single process) of the DDP comparison: the smoke preset on digits, fp32 without TF32."
    torch.backends.cudnn.allow_tf32 = False; torch.backends.cuda.matmul.allow_tf32 = False
    train(replace(apply_overrides(get_preset("smoke"), list(DDP_SETS)), device=device, amp=False), out, progress=False)


def part_ddp(c:Ctx):
    "A tiny run under torchrun with 2 processes (NCCL on GPUs, gloo on the CPU) against one process: logged losses."
    c.add("NCCL in this torch build", torch.distributed.is_nccl_available(), note="torch.distributed.is_nccl_available")
    logs = {}
    with tempfile.TemporaryDirectory(prefix="revssl-ddp-") as tmp:
        for n in (1, 2):
            t = time.monotonic()
            rc, tail = run_logged(ddp_command(n, Path(tmp) / f"p{n}", c.dev.type), c.budget.left())
            if rc: raise RuntimeError(f"the {n}-process run failed (exit {rc}): {tail}")
            logs[n] = read_log(Path(tmp) / f"p{n}")
            c.add(f"{n}-process run wall time", time.monotonic() - t, "s", note="start-up included")
    c.add("loss, 2 processes vs 1: largest relative difference", loss_rel_diff(logs[2], logs[1]), "",
          {"op": "<=", "value": DDP_DIFF_GOAL}, f"{'nccl' if c.dev.type == 'cuda' else 'gloo'}, fp32; every logged "
          f"term of {len(logs[1])} epochs; smoke preset with {', '.join(DDP_SETS)}")


# ---- the command ---------------------------------------------------------------------------------------------------

PART_FNS = {"train": part_train, "memory": part_memory, "augment": part_augment, "probe": part_probe,
            "ddp": part_ddp}


def run_part(name:str, fn, c:Ctx, cap:float, grace:float, skip:str|None=None)->dict:
    "Run one part under its caps: its record (status ok | capped | error | skipped, metrics, error, seconds)."
    rec = dict(status="skipped" if skip else "ok", skip=skip, error=None, traceback=None, cap_s=cap, seconds=0.0,
               metrics=[], failures=[])
    if skip: log(f"{name}: {skip}"); return rec
    log(f"{name}: start (cap {cap:.0f} s)")
    c.budget, c.rec = Budget(cap, grace), rec
    try:
        with c.budget.hard(): fn(c)
        if rec["failures"]: rec.update(status="error", error="; ".join(rec["failures"])[:500])
        elif c.budget.soft: rec["status"] = "capped"
    except PartCapped as e: rec.update(status="capped", error=str(e))
    except Exception as e:
        rec.update(status="error", error=f"{type(e).__name__}: {e}"[:500], traceback=traceback.format_exc()[-4000:])
    rec["seconds"] = c.budget.elapsed()
    log(f"{name}: {rec['status']} in {rec['seconds']:.1f} s" + (f" ({rec['error']})" if rec["error"] else ""))
    gc.collect()
    if c.dev.type == "cuda": torch.cuda.empty_cache()
    return rec


def parse_args(argv=None)->argparse.Namespace:
    "The arguments, checked before any work: one clear error for each mistake."
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="folder for gpu.md and gpu.json")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    p.add_argument("--quick", action="store_true", help="tiny sizes: every code path in well under a minute")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)} (default: all)")
    p.add_argument("--cap-scale", type=float, default=1.0, help="multiply every part's time cap")
    p.add_argument("--workers", type=int, help="DataLoader workers of the reference (default: min(8, CPUs); quick 1)")
    p.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)       # internal: one rank of the DDP part
    a = p.parse_args(argv)
    if a.ddp_worker: return a
    if a.out is None: p.error("--out DIR is required (the folder for gpu.md and gpu.json)")
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS] if parts else ["(none)"]
    if bad: p.error(f"--parts: unknown part {', '.join(map(repr, bad))}; parts are: {', '.join(PARTS)}")
    a.parts = [x for x in PARTS if x in parts]
    if a.device == "auto": a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)")
    if a.device == "cpu" and not a.quick: p.error("the full sizes need a CUDA GPU; on the CPU add --quick")
    if not a.cap_scale > 0: p.error(f"--cap-scale must be > 0, got {a.cap_scale}")
    if a.workers is not None and a.workers < 0: p.error(f"--workers must be >= 0, got {a.workers}")
    try:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / ".write-test").write_text("ok"); (a.out / ".write-test").unlink()
    except OSError as e: p.error(f"--out {a.out}: cannot write there ({e.strerror or e})")
    return a


def meta(dev:torch.device, quick:bool)->dict:
    "The machine and the software of this run."
    import sklearn, torchvision
    name = (f"{torch.cuda.get_device_name(dev)} ({torch.cuda.device_count()} visible)" if dev.type == "cuda"
            else f"CPU ({platform.machine()}, {os.cpu_count()} cores)")
    return dict(device=dev.type, device_name=name, torch=torch.__version__, cuda=torch.version.cuda,
                torchvision=torchvision.__version__, sklearn=sklearn.__version__, python=platform.python_version(),
                cpus=os.cpu_count(), mode="quick" if quick else "full", started=time.strftime("%Y-%m-%d %H:%M:%S"))


def main(argv=None):
    "Check the arguments, run the parts in order, write gpu.md and gpu.json, print the table."
    a = parse_args(argv)
    if a.ddp_worker: return ddp_worker(a.ddp_worker, a.device)
    dev = torch.device("cuda", torch.cuda.current_device()) if a.device == "cuda" else torch.device("cpu")
    caps, sizes = (QUICK_CAPS_S, QUICK) if a.quick else (CAPS_S, FULL)
    workers = a.workers if a.workers is not None else 1 if a.quick else min(8, os.cpu_count() or 1)
    result = {"meta": meta(dev, a.quick), "args": {"parts": a.parts, "cap_scale": a.cap_scale, "workers": workers},
              "parts": {}}
    log(f"bench/gpu.py on {result['meta']['device_name']}, torch {torch.__version__}, parts {', '.join(a.parts)}")
    c = Ctx(dev, sizes, a.quick, a.out, workers)
    for name in a.parts:
        skip = ddp_skip(dev, a.quick) if name == "ddp" else None
        result["parts"][name] = run_part(name, PART_FNS[name], c, caps[name] * a.cap_scale, GRACE_S[a.quick], skip)
        table = write_outputs(a.out, result)           # after every part: a killed run still leaves its table
    print("\n" + table + f"\nwritten: {a.out / 'gpu.md'}, {a.out / 'gpu.json'}")


def write_outputs(out:Path, result:dict)->str:
    "Write gpu.json and gpu.md (the parts so far, the time so far); return the table."
    result["meta"]["total_s"] = time.monotonic() - _T0
    table = markdown_table(table_rows(result))
    (out / "gpu.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "gpu.md").write_text(table)
    return table


if __name__ == "__main__":
    main()
