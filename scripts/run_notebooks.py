"""Execute every notebook in notebooks/ in place, so the committed outputs come from this machine.

    python scripts/run_notebooks.py                  # all of notebooks/*.ipynb
    python scripts/run_notebooks.py notebooks/01_memory_blowup.ipynb --timeout 600

Run it on the GPU machine after the GPU profiles are under profiling/results/:
the notebooks read the newest committed GPU tables there. It needs nbclient,
nbformat and ipykernel (``pip install nbclient nbformat ipykernel``). CI does
not use it: ``pytest --nbmake notebooks/`` executes them without saving.
Exits non-zero when a notebook fails; the others are still executed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_S = 600  # per cell; a notebook that falls back to a CPU run stays far below it


def main(argv=None) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="seconds per cell")
    p.add_argument("--kernel", default="python3")
    args = p.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failed = []
    for path in paths:
        t0 = time.monotonic()
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=args.timeout, kernel_name=args.kernel,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except CellExecutionError as exc:
            failed.append(path)
            print(f"FAILED {path}: {str(exc).splitlines()[0] if str(exc) else exc}", flush=True)
        nbformat.write(nb, path)  # outputs are kept even when a cell failed, to show where
        print(f"{'executed' if path not in failed else 'saved'} {path} in {time.monotonic() - t0:.1f} s", flush=True)
    print(f"{len(paths) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
