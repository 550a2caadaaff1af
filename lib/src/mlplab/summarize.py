"""Rebuild a sweep's summary: ``python -m mlplab.summarize multirun/<date>/<time>``.

Works for finished, failed and interrupted sweeps alike: every job dir with a
``.hydra/overrides.yaml`` becomes a row (ok, failed with its error, or incomplete).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlplab.sweep import collect, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder holding the job dirs")
    args = parser.parse_args(argv)
    if not collect(args.sweep_dir):
        parser.exit(2, f"error: no job dirs (*/.hydra/overrides.yaml) in {args.sweep_dir}\n")
    for path in summarize(args.sweep_dir).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
