"The front page and the result pages are what `.ci/docs.py` renders from nbs/index.ipynb and the committed CSVs."
import importlib.util, json
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("revssl_docs", ROOT/".ci"/"docs.py")
docs = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(docs)

@pytest.mark.parametrize("path", sorted(docs.expected(), key=str), ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_files_are_current(path):
    assert path.read_text(encoding="utf-8") == docs.expected()[path], \
        f"{path.relative_to(ROOT)} is stale: run `python .ci/docs.py` and commit the result"

@pytest.mark.parametrize("path", docs.pages() + [docs.INDEX], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert docs.broken_links(path) == []

def test_readme_links_every_result_page():
    readme = (ROOT/"README.md").read_text(encoding="utf-8")
    for page in docs.pages()[1:]:
        assert f"]({page.relative_to(ROOT).as_posix()})" in readme, f"README.md does not link {page.relative_to(ROOT)}"

def test_notebook_table_lists_every_notebook_in_order():
    table = docs.render_notebooks(ROOT)
    names = [p.stem for p in sorted((ROOT/"nbs").glob("*.ipynb")) if p.stem != "index"]
    rows = [l.split("](")[0].lstrip("| [") for l in table.splitlines()[2:]]
    assert rows == names and len(names) >= 20
    assert "| [12_stepwise](nbs/12_stepwise.ipynb) | `revssl.stepwise` | **Stepwise SSL" in table

def test_renderers_on_small_inputs(tmp_path):
    assert [docs._round(s) for s in ("0.7335", "0.4655", "0.0855", "1")] == ["0.734", "0.466", "0.086", "1.000"]
    assert docs._table(["a", "b"], [["x|y", "1\n2"]]) == "| a | b |\n|---|---|\n| x\\|y | 1 2 |"
    md = "[n](01_x.ipynb) ![f](../figures/a.png) [w](https://e.org) [s](#top) [d](../docs/c.md#part)"
    assert docs.rebase(md, ROOT/"nbs", ROOT) == ("[n](nbs/01_x.ipynb) ![f](figures/a.png) [w](https://e.org) "
                                                "[s](#top) [d](docs/c.md#part)")
    (tmp_path/"here.md").write_text("[ok](here.md) [gone](missing.md#x) [web](http://a.b)\n```\n[code](nope.md)\n```\n")
    assert docs.broken_links(tmp_path/"here.md") == ["missing.md#x"]
    nb = tmp_path/"07_x.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["#| default_exp thing"]},
                                        {"cell_type": "markdown", "source": ["# A title\n", "\n", "> one\n", "> two"]}]}))
    assert docs.first_markdown(nb) == ("A title", "one two") and docs.module_of(nb) == "thing"
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        docs.fill("<!-- generated: nope -->\n<!-- end generated -->", ROOT)

def test_claim_counts_follow_the_csv(tmp_path, monkeypatch):
    rows = "id,section,figure,claim,criterion,paper,measured,verdict,held_in\n" \
           "a,§4,Fig. 1,c,k,p,m1,reproduced,3/3\nb,§4,Fig. 1,c,k,p,m2,not reproduced,1/3\nc,§5,Fig. 4,c,k,p,m3,not measured,\n"
    (tmp_path/"c.csv").write_text(rows)
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    out = docs.render_measured(tmp_path, "c.csv")
    assert "| `b` | Fig. 1 | not reproduced | 1/3 | m2 |" in out
    assert out.endswith("**1 of 2** measured claims hold in every seed (1 not measured).")
