"The SSL families (revssl.families): exact resume, refusals before work, the CLI without submitit."
import subprocess, sys
from dataclasses import replace
import pytest, torch
import revssl.families  # registers the methods
from revssl.config import get_preset, validate, ConfigError
from revssl.train import train, load_checkpoint, build_run

TINY = dict(train_subset=256, depth=1, width=8, proj_dim=16, prototypes=32, batch_size=64, epochs=2,
            analysis_epochs=(0, 2), queue_size=128, device="cpu")

def _cfg(method, **kw): return validate(replace(get_preset("smoke"), method=method, **{**TINY, **kw}))

def _flat(sd, pre=""):
    out = {}
    for k, v in sd.items():
        if isinstance(v, dict): out.update(_flat(v, f"{pre}{k}."))
        elif isinstance(v, torch.Tensor): out[pre + k] = v
    return out

@pytest.mark.parametrize("method", ["byol", "moco"])
def test_resume_is_exact(tmp_path, method):
    cfg = _cfg(method)
    straight = train(cfg, tmp_path/"straight", progress=False)
    halves = train(cfg, tmp_path/"halves", until=1, progress=False)
    train(cfg, halves, resume=True, progress=False)
    a, b = (load_checkpoint(p/"checkpoints"/"last.pt") for p in (straight, halves))
    fa, fb = _flat({"model": a["model"], "method": a["method"]}), _flat({"model": b["model"], "method": b["method"]})
    assert fa.keys() == fb.keys() and any(k.startswith("method.teacher.") for k in fa)
    if method == "moco": assert {"method.queue", "method.queue_ptr"} <= fa.keys()
    for k in fa: assert torch.equal(fa[k], fb[k]), k
    assert (straight/"train_log.csv").read_text().splitlines()[1].split(",")[:5] == \
           (halves/"train_log.csv").read_text().splitlines()[1].split(",")[:5]

@pytest.mark.parametrize("sets, field", [(dict(teacher_momentum=1.0), "teacher_momentum"),
                                         (dict(method="moco", queue_size=100), "queue_size"),
                                         (dict(warmup_teacher_temp=0.0), "warmup_teacher_temp"),
                                         (dict(center_momentum=-0.1), "center_momentum")])
def test_bad_settings_fail_before_work(tmp_path, sets, field):
    with pytest.raises(ConfigError, match=f"config field '{field}'"):
        train(replace(get_preset("smoke"), **{"method": "byol", **TINY, **sets}), tmp_path/"bad", progress=False)
    assert not (tmp_path/"bad").exists()

def test_several_processes_refused(tmp_path):
    class TwoRanks: on = True
    with pytest.raises(ValueError, match="config field 'method': 'dino' is not supported under several processes"):
        build_run(_cfg("dino"), tmp_path/"ddp", False, TwoRanks(), torch.device("cpu"))
    assert not (tmp_path/"ddp").exists()

def test_cli_imports_without_submitit():
    code = ("import sys; sys.modules['submitit'] = None\n"
            "import revssl.cli, revssl.studies\n"
            "try: revssl.studies.MemberJob()\n"
            "except ImportError: print('slurm needs submitit')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "slurm needs submitit"
