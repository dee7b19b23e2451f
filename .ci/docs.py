"""Render the tables of the front page and the result pages from the committed notebooks and CSVs.

    python .ci/docs.py          # rewrite every generated block, and README.md from nbs/index.ipynb
    python .ci/docs.py --check  # change nothing; exit 1 naming each file that differs from what would be written

A generated block is a stretch of markdown between `<!-- generated: NAME ARGS -->` and `<!-- end generated -->`
(in a page under figures/ or docs/, or in a markdown cell of nbs/index.ipynb); NAME is one of `RENDERERS`, ARGS are
paths from the repository root. README.md is nbs/index.ipynb's markdown cells, blocks filled, links rebased to the
root. Everything else in the pages is written by hand.
"""
from __future__ import annotations
import csv, json, os, re, statistics, sys
from decimal import Decimal, ROUND_HALF_UP
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT/"nbs"/"index.ipynb"
README = ROOT/"README.md"
PAGE_DIRS = ("figures", "docs")
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+)(?P<args>[^>]*?) -->\n).*?(<!-- end generated -->)", re.S)
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")

def _cell(s) -> str: return str(s).replace("\n", " ").replace("|", "\\|").strip()

def _table(header:list, rows:list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows])

def _round(s:str, places:int=3) -> str:
    "A number written in a CSV, rounded half up as a reader would (0.7335 -> 0.734)."
    return str(Decimal(s).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))

def _read(path:str) -> list[dict]:
    with open(ROOT/path, newline="", encoding="utf-8") as f: return list(csv.DictReader(f))

def _link(target:Path, here:Path) -> str: return Path(os.path.relpath(target, here)).as_posix()

def first_markdown(nb:Path) -> tuple[str, str]:
    "(title, summary) of a notebook: the `# title` and the `> summary` lines of its first markdown cell."
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    text = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    title = next((l[2:].strip() for l in text.splitlines() if l.startswith("# ")), None)
    if title is None: raise ValueError(f"{nb}: the first markdown cell has no '# title' line")
    summary = " ".join(l.lstrip(">").strip() for l in text.splitlines() if l.startswith(">"))
    return title, summary

def module_of(nb:Path) -> str:
    "The module a notebook exports to (`#| default_exp`), or '' for none."
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(c["source"]), re.M) if c["cell_type"] == "code" else None
        if m: return m.group(1)
    return ""

def render_notebooks(here:Path) -> str:
    "Every notebook of nbs/ but the index, in file-name order (the reading order), with its title and summary."
    rows = []
    for nb in sorted((ROOT/"nbs").glob("*.ipynb")):
        if nb.stem == "index": continue
        title, summary = first_markdown(nb)
        mod = module_of(nb)
        rows.append([f"[{nb.stem}]({_link(nb, here)})", f"`revssl.{mod}`" if mod else "",
                     f"**{title}**" + (f": {summary}" if summary else "")])
    return _table(["notebook", "module", "what it holds"], rows)

def _count(rows:list[dict], what:str) -> str:
    measured = [r for r in rows if r["verdict"] != "not measured"]
    k = sum(r["verdict"] == "reproduced" for r in measured)
    unmeasured = len(rows) - len(measured)
    return (f"**{k} of {len(measured)}** measured claims {what}" +
            (f" ({unmeasured} not measured)." if unmeasured else "."))

def render_claims(here:Path, path:str, seeds:str|None=None) -> str:
    "The front-page table of a claims.csv: id, where, the claim, the verdict, and `held_in` of a seeded run's claims."
    rows, extra = _read(path), {r["id"]: r for r in _read(seeds)} if seeds else {}
    header = ["claim", "paper", "what the paper says", "one run"] + (["held in (seeds)"] if seeds else [])
    body = [[f"`{r['id']}`", f"{r['section']}, {r['figure']}", r["claim"], r["verdict"]] +
            ([extra[r["id"]]["held_in"] if r["id"] in extra else ""] if seeds else []) for r in rows]
    said = _count(rows, "reproduce in the one run")
    if seeds: said += " " + _count(list(extra.values()), "hold in every seed")
    return _table(header, body) + "\n\n" + said

def render_measured(here:Path, path:str) -> str:
    "Every row of a claims.csv with its verdict, the seeds it held in and what was measured."
    rows = _read(path)
    body = [[f"`{r['id']}`", r["figure"], r["verdict"], r["held_in"], r["measured"]] for r in rows]
    what = "hold in every seed" if any(r["held_in"].split("/")[-1] not in ("", "1") for r in rows) else "reproduce"
    return _table(["claim", "figure", "verdict", "held in", "measured"], body) + "\n\n" + _count(rows, what)

def _last_layer(rows:list[dict]) -> list[dict]:
    top = max(int(r["layer"]) for r in rows)
    return [r for r in rows if int(r["layer"]) == top and r["target"] == r["hierarchy"]]

MEASURES = (("ncc_accuracy", "train", "NCC train"), ("ncc_accuracy", "test", "NCC test"),
            ("linear_accuracy", "test", "linear test"))
HIERARCHIES = ("sample", "class", "superclass")

def render_headline(here:Path, path:str) -> str:
    "Last layer of one run's metrics.csv: each hierarchy's NCC and linear accuracy, first → last analysed epoch."
    rows = _last_layer(_read(path))
    e0, e1 = min(int(r["epoch"]) for r in rows), max(int(r["epoch"]) for r in rows)
    val = {(r["epoch"], r["hierarchy"], r["metric"], r["split"]): r["value"] for r in rows}
    body = [[h] + [f"{_round(val[str(e0), h, m, s])} → {_round(val[str(e1), h, m, s])}" for m, s, _ in MEASURES]
            for h in HIERARCHIES]
    return _table(["hierarchy"] + [f"{n} (epoch {e0} → {e1})" for _, _, n in MEASURES], body)

def render_seeds(here:Path, path:str) -> str:
    "Last layer, last epoch of a seeded run's stacked metrics.csv: each seed, mean ± sd (n − 1) and range."
    rows = _last_layer(_read(path))
    e1 = max(int(r["epoch"]) for r in rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    val = {(int(r["seed"]), r["hierarchy"], r["metric"], r["split"]): r["value"] for r in rows if int(r["epoch"]) == e1}
    body = []
    for h in HIERARCHIES:
        for m, s, name in MEASURES:
            v = [val[k, h, m, s] for k in seeds]
            x = [float(a) for a in v]
            body.append([h, name] + [_round(a) for a in v] +
                        [f"{statistics.mean(x):.3f} ± {statistics.stdev(x):.3f}", f"{max(x) - min(x):.3f}"])
    return (f"Last layer, epoch {e1}:\n\n" +
            _table(["hierarchy", "measure"] + [f"seed {k}" for k in seeds] + ["mean ± sd", "range"], body))

RENDERERS = {"notebooks": render_notebooks, "claims": render_claims, "measured": render_measured,
             "headline": render_headline, "seeds": render_seeds}

def fill(text:str, here:Path) -> str:
    "`text` with every generated block rendered afresh (`here`: the folder links are relative to)."
    def one(m):
        name = m["name"]
        if name not in RENDERERS: raise ValueError(f"unknown generated block {name!r}; known: {', '.join(RENDERERS)}")
        return m.group(1) + RENDERERS[name](here, *m["args"].split()) + "\n" + m.group(4)
    return BLOCK.sub(one, text)

def rebase(md:str, src:Path, dst:Path) -> str:
    "Markdown written in folder `src` with its relative links rewritten for a file in folder `dst`."
    def one(m):
        t = m.group(2)
        if re.match(r"^([a-z]+:|#|/)", t): return m.group(0)
        path, _, anchor = t.partition("#")
        new = _link(src/path, dst) + (f"#{anchor}" if anchor else "")
        return m.group(1) + new + m.group(3)
    return LINK.sub(one, md)

README_HEAD = ("<!-- Generated from nbs/index.ipynb by `python .ci/docs.py`: edit the notebook (or the CSVs), "
               "not this file. -->\n\n")

def expected() -> dict[Path, str]:
    "Every generated file as it should be: {path: text}."
    out = {}
    nb = json.loads(INDEX.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            c["source"] = fill("".join(c["source"]), INDEX.parent).splitlines(keepends=True)
    out[INDEX] = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    md = "\n\n".join("".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "markdown")
    out[README] = README_HEAD + rebase(md, INDEX.parent, ROOT) + "\n"
    for d in PAGE_DIRS:
        for page in sorted((ROOT/d).glob("*.md")):
            text = page.read_text(encoding="utf-8")
            if BLOCK.search(text): out[page] = fill(text, page.parent)
    return out

def pages() -> list[Path]:
    "The files a reader navigates: README.md and the hand-written pages under figures/ and docs/."
    return [README] + [p for d in PAGE_DIRS for p in sorted((ROOT/d).glob("*.md")) if p.name != "report.md"]

def broken_links(path:Path) -> list[str]:
    "Relative links and images in a markdown file (or a notebook's markdown cells) whose target does not exist."
    if path.suffix == ".ipynb":
        text = "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                         if c["cell_type"] == "markdown")
    else: text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    bad = []
    for m in LINK.finditer(text):
        t = m.group(2)
        if re.match(r"^([a-z]+:|#)", t): continue
        if not (path.parent/t.partition("#")[0]).exists(): bad.append(t)
    return bad

def main(argv:list[str]) -> int:
    check = "--check" in argv
    stale = [p for p, text in expected().items() if p.read_text(encoding="utf-8") != text] if check else []
    if not check:
        for p, text in expected().items():
            if p.read_text(encoding="utf-8") != text: p.write_text(text, encoding="utf-8"); print("wrote", p.relative_to(ROOT))
    for p in stale: print(f"{p.relative_to(ROOT)} differs from what `python .ci/docs.py` writes", file=sys.stderr)
    return 1 if stale else 0

if __name__ == "__main__": sys.exit(main(sys.argv[1:]))
