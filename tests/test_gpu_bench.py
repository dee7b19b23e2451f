"""bench/gpu.py, the one prepared command for the README's GPU figures, checked on the CPU so that a GPU run cannot meet
a crash the CPU could have shown: its `--quick` mode end to end (every part, the JSON, the markdown table), its argument
checks (one clear error before any work), its imports without an installed revssl, and its pure helpers with exact
values. The speeds it prints are never asserted."""
import importlib.util, json, os, re, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.py"
_spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
gpu = importlib.util.module_from_spec(_spec)
sys.modules["bench_gpu"] = gpu
_spec.loader.exec_module(gpu)

HEADER = ["part", "metric", "value", "goal", "note"]


def cells(line:str)->list[str]:
    "The cells of one markdown table row (escaped pipes stay inside their cell)."
    assert line.startswith("| ") and line.endswith(" |"), line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[2:-2])]


def parse_table(text:str)->list[dict]:
    "Rows of the single markdown table in `text`, as dicts keyed by the header."
    lines = text.strip().splitlines()
    assert cells(lines[0]) == HEADER and re.fullmatch(r"\|(-+:?\|){5}", lines[1]), lines[:2]
    rows = [cells(l) for l in lines[2:]]
    assert all(len(r) == 5 for r in rows), [r for r in rows if len(r) != 5]
    return [dict(zip(HEADER, r)) for r in rows]


def metrics(result:dict, part:str)->dict:
    return {m["metric"]: m for m in result["parts"][part]["metrics"]}


# ---- the quick mode, end to end ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "out"
    t = time.monotonic()
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return out, p, json.loads((out / "gpu.json").read_text()), time.monotonic() - t


def test_every_part_reports(quick):
    _, _, res, _ = quick
    assert list(res["parts"]) == list(gpu.PARTS)
    for name, p in res["parts"].items():
        assert p["status"] in ("ok", "capped") and not p["failures"], (name, p["error"], p["traceback"])
        assert p["metrics"] and 0 < p["seconds"] <= p["cap_s"] + gpu.GRACE_S[True], (name, p["seconds"])
    m = metrics(res, "train")
    for k in ("reference", "revssl eager", "revssl graphed", "revssl compiled", "revssl compiled reduce-overhead",
              f"revssl eager, batch {gpu.QUICK.big_batch}"):
        assert m[f"views/s, {k}"]["value"] > 0, k
    for which in ("compiled", "compiled reduce-overhead"):      # on the CPU both compile with aot_eager
        assert m[f"torch.compile warm-up (first step), {which}"]["note"] == "backend aot_eager"
    assert "step-time model: overhead per step" in m
    mem = metrics(res, "memory")
    for depth, width, _ in gpu.QUICK.mem_shapes:
        name = f"RES-{depth}-{width}"
        ratio = mem[f"{name}: channels_last / contiguous"]["value"]
        assert ratio == pytest.approx(mem[f"views/s, {name}, channels_last"]["value"]
                                      / mem[f"views/s, {name}, contiguous"]["value"], rel=1e-12)
    assert metrics(res, "augment")[f"views/s, sync-free apply, batch {2 * gpu.QUICK.aug_batch}"]["value"] > 0
    assert metrics(res, "augment")["views/s, 32x32, batch 32"]["value"] > 0
    assert metrics(res, "augment")["peak GPU memory over an epoch"]["value"] is None      # a CPU run says so
    assert 0 <= metrics(res, "probe")["largest accuracy difference, fast vs LinearSVC"]["value"] <= gpu.PROBE_DIFF_GOAL
    assert 0 <= metrics(res, "ddp")["loss, 2 processes vs 1: largest relative difference"]["value"] <= gpu.DDP_DIFF_GOAL
    assert all(r["goal"] is None for p in res["parts"].values() for r in p["metrics"])   # goals are for full sizes
    assert (res["meta"]["device"], res["meta"]["torch"], res["meta"]["mode"]) == ("cpu", torch.__version__, "quick")


def test_train_rows_agree_with_each_other(quick):
    "FLOPs per view: the model's convolutions and matmuls (3x forward, minus the stem's input gradient) plus the loss."
    _, _, res, _ = quick
    m, s = metrics(res, "train"), gpu.QUICK
    w, p, f1 = s.width, s.proj_dim, 2 * 16 * 16 * s.width * 3 * 4
    fwd = f1 + 2 * 64 * w * w * 4 + 2 * s.depth * 2 * 64 * w * w * 9 + 2 * w * p + 2 * p * p
    fpv = m["FLOPs per view (forward+backward)"]["value"] * 1e9
    assert 3 * fwd - f1 <= fpv <= 1.01 * (3 * fwd - f1)
    for which in ("eager", "graphed", "compiled", "compiled reduce-overhead"):
        rate = m[f"views/s, revssl {which}"]["value"]
        minutes = 1000 * 195 * 512 / rate / 60
        assert m[f"`paper` run, extrapolated, {which}"]["value"] == pytest.approx(minutes, rel=1e-12)
        assert m[f"achieved TFLOP/s, {which}"]["value"] == pytest.approx(rate * fpv / 1e12, rel=1e-9)
        assert m[f"speed-up over the reference, {which}"]["value"] == pytest.approx(
            rate / m["views/s, reference"]["value"], rel=1e-12)


def test_table_parses_and_is_printed(quick):
    out, p, res, _ = quick
    text = (out / "gpu.md").read_text()
    rows = parse_table(text)
    assert text == gpu.markdown_table(gpu.table_rows(res)) and text in p.stdout
    assert [r["part"] for r in rows if r["metric"] == "part wall time"] == list(gpu.PARTS)
    assert {r["part"] for r in rows} == {"run", *gpu.PARTS}
    assert rows[0]["metric"] == "device" and rows[-1]["metric"] == "total wall time"
    assert f"torch {torch.__version__}" in rows[1]["value"]
    assert re.search(r"^\[\d\d:\d\d:\d\d \+ *\d+\.\ds\] train: start", p.stdout, re.M)   # timestamped progress


# ---- arguments: one clear error before any work --------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--quick", "--parts", "train,bogus"], "--parts: unknown part 'bogus'; parts are: train, memory, augment, probe, ddp"),
    (["--quick", "--parts", ","], "--parts: unknown part '(none)'"),
    (["--quick", "--device", "cuda"], "--device cuda: no CUDA GPU is visible to torch"),
    (["--device", "cpu"], "the full sizes need a CUDA GPU; on the CPU add --quick"),
    (["--quick", "--cap-scale", "0"], "--cap-scale must be > 0, got 0.0"),
    (["--quick", "--workers", "-1"], "--workers must be >= 0, got -1"),
    (["--quick", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
])
def test_bad_arguments(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e: gpu.parse_args([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("error:") == 1, err
    assert not out.exists()                                  # nothing was started, not even the folder


def test_missing_or_unwritable_out(tmp_path, capsys):
    with pytest.raises(SystemExit): gpu.parse_args(["--quick"])
    assert "--out DIR is required" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit): gpu.parse_args(["--quick", "--out", str(tmp_path / "file" / "sub")])
    assert f"--out {tmp_path / 'file' / 'sub'}: cannot write there" in capsys.readouterr().err


def test_imports_without_an_installed_revssl_and_a_bad_part_fails_first(tmp_path):
    """The GPU machine has no .venv: the script finds revssl in its checkout (its folder's parent) by itself. The same
    command line with an unknown part exits 2 with one message, before any work (no output folder)."""
    strip = ("import sys, importlib.util; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
             "(getattr(f, '__module__', '') or '')]; sys.path[:] = [p for p in sys.path if p.rstrip('/') not in "
             f"({str(ROOT)!r}, '')]; ")
    probe = strip + "print(importlib.util.find_spec('revssl') is None)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    if found.stdout.strip() != "True":
        pytest.skip("revssl is installed as a copy, so 'not installed' cannot be simulated here")
    argv = ["gpu.py", "--quick", "--parts", "nope", "--out", str(tmp_path / "o")]
    run = strip + (f"import runpy; sys.argv = {argv!r}\n"
                   f"try: runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
                   "except SystemExit as e: print(e.code, sys.modules['revssl'].__file__)")
    p = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert p.stdout.split() == ["2", str(ROOT / "revssl" / "__init__.py")], (p.stdout, p.stderr[-2000:])
    assert p.stderr.strip().splitlines()[-1].endswith(
        "error: --parts: unknown part 'nope'; parts are: train, memory, augment, probe, ddp") and p.stderr.count("error:") == 1
    assert not (tmp_path / "o").exists()


# ---- pure helpers, exact values ------------------------------------------------------------------------------------

def test_paper_run_and_tflops_arithmetic():
    assert gpu.paper_run_seconds(99_840) == 1000.0           # 1000 epochs x 195 full batches x 256 images x 2 views
    assert gpu.paper_run_seconds(1000, epochs=10, n_train=1000, batch=256) == 15.36   # 3 full batches per epoch
    assert gpu.paper_run_seconds(28_000) / 60 < 60 < gpu.paper_run_seconds(27_000) / 60   # the goals agree
    assert gpu.tflops(28_000, 4.5e9) == pytest.approx(126.0, rel=1e-12)


def test_goal_and_value_formatting():
    ge, le = {"op": ">=", "value": 5}, {"op": "<=", "value": 2}
    assert [gpu.goal_met(v, ge) for v in (5, 4.9, None, True, "x")] == [True, False, None, None, None]
    assert (gpu.goal_met(3, le), gpu.goal_met(2.0, le), gpu.goal_met(1, None)) == (False, True, None)
    cases = [((28_123.4, "views/s"), "28,123 views/s"), ((None, "s"), "—"), ((1.234, "x"), "1.23×"),
             ((480, "s"), "480 s"), ((59.43, "min"), "59.4 min"), ((0.0123, "s"), "0.0123 s"),
             ((8.89e-07, ""), "8.89e-07"),
             ((True, ""), "True"), ((4.4266, "GFLOP"), "4.43 GFLOP"), ((2048.4, "MiB"), "2,048 MiB"), ((12, ""), "12")]
    assert [gpu.fmt_value(*a) for a, _ in cases] == [b for _, b in cases]
    assert gpu.goal_text({"op": ">=", "value": 28_000}, "views/s") == "≥ 28,000 views/s" and gpu.goal_text(None) == ""
    assert gpu.md_cell("a | b\n  c") == "a \\| b c"


def test_markdown_table_exact():
    meta = dict(device_name="GPU X (1 visible)", mode="full", torch="2.0", torchvision="0.1", sklearn="1.0",
                python="3.11", cuda="12.1", cpus=16, total_s=100.0)
    ok = dict(status="ok", skip=None, error=None, cap_s=10, seconds=2.5, metrics=[
        dict(metric="views/s", value=30_000.0, unit="views/s", goal={"op": ">=", "value": 28_000}, met=True,
             note="a|b")])
    bad = dict(status="error", skip=None, error="ValueError: boom", cap_s=5, seconds=0.5, metrics=[])
    skip = dict(status="skipped", skip="skipped: 1 GPU", error=None, cap_s=5, seconds=0.0, metrics=[])
    text = gpu.markdown_table(gpu.table_rows({"meta": meta, "parts": {"train": ok, "probe": bad, "ddp": skip}}))
    assert text == (
        "| part | metric | value | goal | note |\n|---|---|---:|---|---|\n"
        "| run | device | GPU X (1 visible) |  | full sizes |\n"
        "| run | software | torch 2.0, torchvision 0.1, scikit-learn 1.0 |  | Python 3.11, CUDA 12.1, 16 CPUs |\n"
        "| train | views/s | 30,000 views/s | ≥ 28,000 views/s | met; a\\|b |\n"
        "| train | part wall time | 2.5 s | cap 10 s | ok |\n"
        "| probe | part wall time | 0.5 s | cap 5 s | error: ValueError: boom |\n"
        "| ddp | skipped | — |  | skipped: 1 GPU |\n"
        "| run | total wall time | 100.0 s | ≤ 480 s | met |\n")
    assert parse_table(text)[2]["note"] == "met; a|b"


def test_loss_rel_diff():
    a = [{"epoch": "1", "lr": "0.1", "total": "2.0", "variance": "1.0", "time_s": "3", "views_per_s": "9"}]
    b = [{"epoch": "1", "lr": "0.2", "total": "2.5", "variance": "1.0", "time_s": "1", "views_per_s": "1"}]
    assert gpu.loss_rel_diff(a, b) == pytest.approx(0.2, rel=1e-12) and gpu.loss_rel_diff(b, b) == 0
    with pytest.raises(ValueError, match=r"different epochs: \['1'\] vs \['2'\]"):
        gpu.loss_rel_diff(a, [{**b[0], "epoch": "2"}])


def test_ddp_command_and_skip(monkeypatch):
    one = gpu.ddp_command(1, Path("/r"), "cpu")
    assert one == [sys.executable, str(SCRIPT), "--ddp-worker", "/r", "--device", "cpu"]
    assert gpu.ddp_command(2, Path("/r"), "cuda") == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      "--nproc_per_node", "2", str(SCRIPT), "--ddp-worker", "/r",
                                                      "--device", "cuda"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpu.ddp_skip(torch.device("cuda", 0), quick=False) == "skipped: 1 GPU"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert gpu.ddp_skip(torch.device("cuda", 0), quick=False) is None
    assert gpu.ddp_skip(torch.device("cpu"), quick=True) is None and gpu.ddp_skip(torch.device("cpu"), False)


def test_measure_counts_and_stops_at_the_deadline():
    calls = []
    step, cpu = (lambda: calls.append(1)), torch.device("cpu")
    rate, windows, cut = gpu.measure(step, 10, 2, 5, 3, time.monotonic() + 60, cpu)
    assert (len(calls), windows, cut) == (2 + 15, 3, False) and rate > 0
    calls.clear()
    rate, windows, cut = gpu.measure(step, 10, 2, 5, 3, time.monotonic() - 1, cpu)   # past: one step is still timed
    assert (len(calls), windows, cut) == (2 + 1, 1, True) and rate > 0


def test_step_time_model_exact():
    "Two step times on a line: 4 GFLOP per view, 100 TFLOP/s and 5 ms per step give back the rate and the overhead."
    fpv, rate, over = 4e9, 1e14, 5e-3
    views_per_s = lambda b: 2 * b / (2 * b * fpv / rate + over)
    r, o = gpu.step_time_model(views_per_s(256), views_per_s(1024), 256, 1024, fpv)
    assert r == pytest.approx(rate, rel=1e-9) and o == pytest.approx(over, rel=1e-9)


def test_sizes_are_keywords():
    assert gpu.FULL.width == 250 and gpu.FULL.batch == 256 and gpu.FULL.mem_shapes == ((10, 250, 1000), (5, 1000, 4000))
    with pytest.raises(TypeError): gpu.Sizes(10, 250)


def test_flops_per_view_exact():
    torch.manual_seed(0)
    lin = nn.Linear(3, 4, bias=False)                         # forward 2*3*4 per row, the weight's gradient as much
    assert gpu.flops_per_view(lin, torch.randn(5, 3)) == 48 and lin.weight.grad is None
    cfg = gpu.replace(gpu.train_config(gpu.QUICK, torch.device("cpu")), depth=1, width=4, proj_dim=8)
    model = gpu.build_model(cfg, 3, 100, 32)
    f1 = 2 * 16 * 16 * 4 * 3 * 4                              # the stem's first conv: no input gradient
    fwd = f1 + 2 * 64 * 4 * 4 * 4 + 2 * 2 * 64 * 4 * 4 * 9 + 2 * 4 * 8 + 2 * 8 * 8
    assert gpu.flops_per_view(model, torch.randn(4, 3, 32, 32)) == 3 * fwd - f1


def test_hard_cap_stops_a_stuck_part():
    b, t = gpu.Budget(0.05, 0.05), time.monotonic()
    with pytest.raises(gpu.PartCapped, match="hard cap"):
        with b.hard():
            while True: time.sleep(0.01)
    assert time.monotonic() - t < 2


def test_run_part_records_errors_caps_and_skips_and_goes_on():
    c = gpu.Ctx(torch.device("cpu"), gpu.QUICK, True, Path("."), 1)
    def fails(c): c.add("kept", 1.5, "s"); raise ValueError("boom")
    def soft(c): c.budget.soft = True; c.add("partial", 2, "")
    def stuck(c):
        c.add("before", 3, "")
        while True: time.sleep(0.01)
    def one_fails(c): c.attempt("x", lambda: 1 / 0); c.add("after", 4, "")
    recs = [gpu.run_part("a", fails, c, 5, 1), gpu.run_part("b", soft, c, 5, 1),
            gpu.run_part("c", stuck, c, 0.05, 0.05), gpu.run_part("d", fails, c, 5, 1, skip="skipped: why"),
            gpu.run_part("e", one_fails, c, 5, 1)]
    assert [r["status"] for r in recs] == ["error", "capped", "capped", "skipped", "error"]
    assert recs[0]["error"] == "ValueError: boom" and "raise ValueError" in recs[0]["traceback"]
    names = [[m["metric"] for m in r["metrics"]] for r in recs]
    assert names == [["kept"], ["partial"], ["before"], [], ["x", "after"]]
    assert "hard cap" in recs[2]["error"] and recs[3]["skip"] == "skipped: why"
    assert recs[4]["error"] == "x: ZeroDivisionError: division by zero" and recs[4]["metrics"][0]["value"] is None
    assert recs[4]["metrics"][0]["note"] == "failed: ZeroDivisionError: division by zero"


def test_synthetic_grid_has_the_grid_shapes():
    s = gpu.QUICK
    feats, labels = gpu.synthetic_grid(s, torch.device("cpu"))
    assert {k: {l: tuple(x.shape) for l, x in v.items()} for k, v in feats.items()} == {
        "train": {0: (400, 16), 1: (400, 16)}, "test": {0: (200, 16), 1: (200, 16)},
        "sample_train": {0: (100, 16), 1: (100, 16)}, "sample_test": {0: (40, 16), 1: (40, 16)}}
    assert torch.equal(labels["train"]["superclass"], labels["train"]["class"] % s.supers)
    assert torch.equal(labels["sample_test"]["sample"], torch.arange(10).repeat_interleave(4))
    again, _ = gpu.synthetic_grid(s, torch.device("cpu"))
    assert torch.equal(again["train"][1], feats["train"][1])    # seeded
