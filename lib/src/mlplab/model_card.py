"""The model card: ``model/README.md`` beside an exported model, what a person reads before
using it: what it does, what it takes, what it was trained on, how well it did on its test
split, and how it was trained. Its YAML front matter holds the same facts for programs (the
layout of Hugging Face's model cards).

Each fact comes from where it is kept: the checkpoint (its config, classes, targets), the
export (model.json: the input, the parity), and the run's ``metrics.json`` for the test
figures, but only when that run tested this very checkpoint; otherwise the card says they are
not known for it, instead of quoting another checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from mlplab.record import finite_number

CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"


def tested_figures(checkpoint: Path) -> dict[str, Any]:
    """What the run that wrote ``checkpoint`` measured when it tested that checkpoint: its
    ``test/*`` and ``baseline/*`` figures, the data's name and split sizes. ``{}`` when its
    run dir has no metrics.json or tested another checkpoint. The file is untrusted: only
    numbers and names of the expected shapes are taken."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text()) if run_dir else None
    except (OSError, ValueError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    best = metrics.get("best_checkpoint")
    if not isinstance(best, str) or Path(best).name != checkpoint.name:
        return {}  # another checkpoint's figures (last.ckpt exported, best.ckpt tested)
    figures: dict[str, Any] = {
        "metrics": {
            k: float(v)
            for k, v in metrics.items()
            if k.startswith(("test/", "baseline/")) and finite_number(v)
        }
    }
    if isinstance(metrics.get("data"), str):
        figures["data"] = metrics["data"]
    sizes = metrics.get("split_sizes")
    if isinstance(sizes, dict) and all(isinstance(n, int) for n in sizes.values()):
        figures["split_sizes"] = {str(k): n for k, n in sizes.items()}
    for key in ("tested_epoch", "epochs_trained"):
        if isinstance(metrics.get(key), int):
            figures[key] = metrics[key]
    return figures


def model_card(spec: dict[str, Any], config: Any, checkpoint: Path, version: str) -> str:
    """The card of an exported model: ``spec`` is its model.json, ``config`` the run config
    stored in ``checkpoint``, ``version`` the exporting mlplab's."""
    figures = tested_figures(checkpoint)
    front: dict[str, Any] = {
        "task": spec["task"],
        "format": spec["format"],
        "model_file": spec["model"],
        "input": {k: spec["input"][k] for k in ("name", "dtype", "shape")},
        "output": {k: spec["output"][k] for k in ("name", "dtype", "shape")},
    }
    if spec.get("class_names"):
        front["classes"] = spec["class_names"]
    if spec.get("targets"):
        front["targets"] = spec["targets"]
    front["data"] = {
        "name": figures.get("data", "unknown"),
        "split_sizes": figures.get("split_sizes", "unknown"),
    }
    front["test_metrics"] = figures.get("metrics") or "unknown"
    front["checkpoint"] = str(checkpoint)
    front["parity"] = {k: spec["parity"][k] for k in ("examples", "max_abs_diff", "tolerance")}
    front["mlplab_version"] = version
    trained_with = OmegaConf.to_container(config, resolve=False) if config is not None else {}
    body = [
        f"# {spec['task'].capitalize()} model ({spec['format']})",
        "",
        _what_it_does(spec),
        "",
        "## Input",
        "",
        f"`{spec['input']['name']}`: {spec['input']['dtype']} of shape "
        f"`({', '.join(map(str, spec['input']['shape']))})`, {spec['input']['description']}."
        + (
            " Columns, in order: " + ", ".join(f"`{c}`" for c in spec["input"]["columns"]) + "."
            if spec["input"].get("columns")
            else ""
        ),
        "",
        f"Output `{spec['output']['name']}`: {spec['output']['description']}.",
        "",
        "## Test figures",
        "",
        *_figures_lines(figures),
        "",
        f"The exported model gives what the PyTorch model gives on its "
        f"{spec['parity']['examples']} test examples, within {spec['parity']['tolerance']:g} "
        f"(largest difference {spec['parity']['max_abs_diff']:.2g}). `model.json` holds the "
        "input's preprocessing constants.",
        "",
        "## How it was trained",
        "",
        f"The run config stored in `{checkpoint.name}` (secrets redacted):",
        "",
        "```yaml",
        yaml.safe_dump(trained_with, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n" + "\n".join(body)


def _what_it_does(spec: dict[str, Any]) -> str:
    if spec["task"] == "classification" and spec.get("class_names"):
        names = spec["class_names"]
        shown = ", ".join(f"`{n}`" for n in names[:20]) + (", ..." if len(names) > 20 else "")
        return f"Classifies an input into one of {len(names)} classes: {shown}."
    if spec.get("targets"):
        return "Predicts " + ", ".join(f"`{t}`" for t in spec["targets"]) + "."
    return f"A {spec['task']} model."


def _figures_lines(figures: dict[str, Any]) -> list[str]:
    if not figures.get("metrics"):
        return [
            "Unknown: the run that wrote this checkpoint did not record a test of it (no "
            "metrics.json beside its checkpoints/, or the run tested another checkpoint). "
            "Measure it with `python eval.py ckpt_path=<this checkpoint>`."
        ]
    data = figures.get("data", "its data")
    sizes = figures.get("split_sizes", {})
    split = f" ({sizes['test']:,} examples)" if isinstance(sizes.get("test"), int) else ""
    epoch = f", the weights of epoch {figures['tested_epoch']}" if "tested_epoch" in figures else ""
    lines = [f"On the test split of {data}{split}{epoch}:", ""]
    lines += [f"- `{k}`: {v:.4g}" for k, v in figures["metrics"].items()]
    return lines
