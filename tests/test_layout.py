"""The reading order is the dependency order: a module or notebook imports only revssl modules whose notebook comes
earlier in the numbering (or is itself), and no two notebooks share a number (nbdev's letter suffixes tell siblings
apart: `05a_spectra`, `05b_distributed`, ...)."""
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS, LIB = ROOT/"nbs", ROOT/"revssl"
PREFIX = re.compile(r"^(\d+)([a-z]?)_")


def order(name: str) -> tuple | None:
    "A notebook's place in the reading order, from its `NNx_` prefix ((5, 'c') for 05c_train); None for `index`."
    m = PREFIX.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def code_cells(path: Path) -> list:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def module_notebooks(nbs: Path) -> dict:
    "revssl module name -> the notebook stem that exports it (`#| default_exp`)."
    out = {}
    for p in sorted(nbs.glob("*.ipynb")):
        for src in code_cells(p):
            for m in re.finditer(r"^#\|\s*default_exp\s+(\S+)", src, re.M): out[m.group(1)] = p.stem
    return out


def revssl_imports(source: str, package: bool) -> set:
    "The revssl modules `source` imports (anywhere, lazy imports included); relative ones too when `package`."
    try: tree = ast.parse(source)
    except SyntaxError:   # a notebook cell with IPython magics: keep its Python lines
        tree = ast.parse("\n".join(l for l in source.splitlines() if not l.lstrip().startswith(("%", "!"))))
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            found |= {a.name.split(".")[1] for a in n.names if a.name.startswith("revssl.")}
        elif isinstance(n, ast.ImportFrom):
            if n.level == 0 and n.module == "revssl" or package and n.level == 1 and n.module is None:
                found |= {a.name for a in n.names}
            elif n.level == 0 and (n.module or "").startswith("revssl."): found.add(n.module.split(".")[1])
            elif package and n.level == 1: found.add(n.module.split(".")[0])
    return found


def later_imports(importer: str, stem: str, modules: set, owner: dict) -> list:
    "'importer -> module (notebook)' for each of `modules` whose notebook comes after notebook `stem`."
    here = order(stem)
    return [f"{importer} imports revssl.{m} ({owner[m]})" for m in sorted(modules)
            if m in owner and here is not None and order(owner[m]) > here]


def test_helpers_on_a_tiny_layout(tmp_path):
    for stem, exp, src in [("01_a", "a", "x = 1"), ("02a_b", "b", "from revssl.c import y"), ("02b_c", "c", "")]:
        cell = {"cell_type": "code", "source": f"#| default_exp {exp}\n{src}", "metadata": {}, "outputs": [], "execution_count": None}
        (tmp_path/f"{stem}.ipynb").write_text(json.dumps({"cells": [cell]}))
    owner = module_notebooks(tmp_path)
    assert owner == {"a": "01_a", "b": "02a_b", "c": "02b_c"}
    assert revssl_imports("from .c import y\nimport revssl.a\nfrom . import b\ndef f():\n    from revssl.models import m", True) == {"c", "a", "b", "models"}
    assert revssl_imports("from .c import y\nfrom revssl import a, b\n%time import revssl.d", False) == {"a", "b"}
    assert later_imports("revssl/b.py", "02a_b", {"a", "c", "torch"}, owner) == ["revssl/b.py imports revssl.c (02b_c)"]
    assert later_imports("revssl/c.py", "02b_c", {"a", "b", "c"}, owner) == []
    assert order("05c_train") == (5, "c") and order("10_randomness") == (10, "") and order("index") is None


def test_no_two_notebooks_share_a_number():
    stems = sorted(p.stem for p in NBS.glob("*.ipynb") if order(p.stem))
    by_number = {}
    for s in stems: by_number.setdefault(order(s)[0], []).append(s)
    shared = [v for v in by_number.values() if len(v) > 1 and (len({order(s) for s in v}) < len(v) or any(not order(s)[1] for s in v))]
    assert not shared, f"notebooks sharing a number (give each its own letter suffix): {shared}"


def test_every_module_comes_from_a_notebook():
    owner = module_notebooks(NBS)
    orphans = [p.name for p in LIB.glob("*.py") if not p.stem.startswith("_") and p.stem not in owner]
    assert not orphans, f"modules no notebook exports: {orphans}"


def test_modules_import_only_earlier_notebooks():
    owner = module_notebooks(NBS)
    bad = [b for p in sorted(LIB.glob("*.py")) if p.stem in owner
           for b in later_imports(f"revssl/{p.name} ({owner[p.stem]})", owner[p.stem], revssl_imports(p.read_text(), True), owner)]
    assert not bad, "imports against the reading order:\n" + "\n".join(bad)


def test_notebooks_import_only_earlier_notebooks():
    owner = module_notebooks(NBS)
    bad = [b for p in sorted(NBS.glob("*.ipynb"))
           for b in later_imports(f"nbs/{p.name}", p.stem, set().union(*map(lambda s: revssl_imports(s, False), code_cells(p))), owner)]
    assert not bad, "imports against the reading order:\n" + "\n".join(bad)
