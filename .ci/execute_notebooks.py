"""Execute notebooks top to bottom and store their outputs, so a reader sees figures and tables without running them.

Cells flagged with one of settings.ini's `tst_flags` (`slow`, `gpu`) are skipped, as in `nbdev_test`; their old
outputs are cleared. Usage: `python .ci/execute_notebooks.py [nbs/NAME.ipynb ...]` (default: every notebook).
Run `nbdev_clean` afterwards (the Makefile's `notebooks` target does both)."""
import configparser, os, re, sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parent.parent

def skip_flags() -> set:
    "The flags whose cells plain `nbdev_test` skips (settings.ini's `tst_flags`)."
    cp = configparser.ConfigParser(); cp.read(ROOT/"settings.ini")
    return set(cp["DEFAULT"].get("tst_flags", "").split())


def cell_flags(source: str) -> set:
    "Directive words of a cell's `#| word` lines."
    return {w for m in re.finditer(r"^#\|\s*(.+)$", source, re.M) for w in m.group(1).split()}


def execute(path: Path, flags: set) -> None:
    "Run `path`'s cells in its folder (skipping flagged ones) and write it back with the outputs."
    nb = read_nb(path)
    skipped = [c for c in nb.cells if c.cell_type == "code" and cell_flags(c.source) & flags]
    for c in skipped: c.outputs = []
    shell, cwd = CaptureShell(path), os.getcwd()
    os.chdir(path.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != "code" or bool(cell_flags(c.source) & flags))
    finally: os.chdir(cwd)
    write_nb(nb, path)
    print(f"{path}: {sum(c.cell_type == 'code' for c in nb.cells) - len(skipped)} cells run, {len(skipped)} skipped")


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT/"nbs").glob("*.ipynb"))
    for p in paths: execute(p.resolve(), skip_flags())
