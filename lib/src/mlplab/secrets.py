"""Secrets (API keys, tokens, passwords) kept out of everything a run writes or prints.

A key is secret by its whole name, not by a word inside it: ``api_key``, ``token``,
``password``, ``secret``, ``credentials``, names ending in ``_token``, ``_secret``,
``_password``, ``_api_key``, and keys named as secret or private (``secret_key``,
``aws_secret_access_key``, ``private_key``) (``wandb_token``: secret; ``max_tokens``,
``num_keypoints``, ``secret_notes``: not).
A secret should come from the environment (``${oc.env:NAME}`` in a config, or the variable a
library reads itself, like ``WANDB_API_KEY``): then what is written is the interpolation,
which a resumed run resolves again, never the value.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mlplab.rundir import write_text

SECRET_NAME = re.compile(
    r"^(api_?key|token|password|passwd|secret|credentials?)$"
    r"|_(api_?key|token|secret|password|passwd)$"
    r"|(^|_)(secret|private)(_[a-z0-9]+)*_?key$",  # secret_key, aws_secret_access_key
    re.IGNORECASE,
)
HIDDEN = "***"


def is_secret_name(key: object) -> bool:
    return isinstance(key, str) and SECRET_NAME.search(key) is not None


def redact_secrets(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, each secret value replaced by ``***``, or by
    its ``${oc.env:...}`` interpolation when it comes from the environment."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    raw = OmegaConf.to_container(cfg, resolve=False)
    return _redact(resolved, raw)


def _redact(value: Any, raw: Any) -> Any:
    if isinstance(value, dict):
        raw = raw if isinstance(raw, dict) else {}
        return {
            k: _hidden(raw.get(k))
            if is_secret_name(k) and v not in (None, "")
            else _redact(v, raw.get(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        raw = raw if isinstance(raw, list) and len(raw) == len(value) else [None] * len(value)
        return [_redact(v, r) for v, r in zip(value, raw, strict=True)]
    return value


def _hidden(raw: Any) -> str:
    return raw if isinstance(raw, str) and raw.startswith("${oc.env:") else HIDDEN


def redact_override(override: str) -> str:
    """``+notes.api_key=abc`` -> ``+notes.api_key=***``; other overrides unchanged."""
    key, sep, value = override.partition("=")
    name = key.lstrip("+~").rsplit(".", 1)[-1]
    if sep and is_secret_name(name) and value and not value.startswith("${oc.env:"):
        return f"{key}=***"
    return override


def redact_hydra_record(node: Any) -> Any:
    """Hydra's own records (a job's ``.hydra/*.yaml``, a sweep's ``multirun.yaml``): secret
    values redacted in mappings and in override strings (``hydra.overrides.task`` entries,
    ``override_dirname`` joined with commas)."""
    if isinstance(node, dict):
        return {
            k: _hidden(v) if is_secret_name(k) and v not in (None, "") else redact_hydra_record(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [redact_hydra_record(v) for v in node]
    if isinstance(node, str) and "=" in node:
        return ",".join(redact_override(part) for part in node.split(","))
    return node


class RedactHydraFiles(Callback):
    """Hydra job callback: keep secret values out of the files Hydra writes for a job.

    Hydra saves ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` before the job starts;
    this rewrites them with secret values redacted (see :func:`is_secret_name`). It also
    redacts them in ``sys.argv``, which W&B records as the run's command line; Hydra has
    parsed it by then, and nothing reads it again.
    """

    FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        sys.argv[:] = [redact_override(arg) for arg in sys.argv]
        # The sweeper wrote the sweep's multirun.yaml before its first job started.
        if config.hydra.mode is not None and config.hydra.mode.name == "MULTIRUN":
            redact_file(Path(config.hydra.sweep.dir) / "multirun.yaml")
        subdir = config.hydra.output_subdir
        if subdir is None:
            return
        folder = Path(config.hydra.runtime.output_dir) / subdir
        for name in self.FILES:
            redact_file(folder / name)


# A name before a ``:`` (a YAML key) or an ``=`` (an override); a file naming no secret key
# this way holds no secret, and is not parsed: parsing a job's four files took 0.15 s of
# each Optuna trial on a 2-core CPU.
_NAMED = re.compile(r"([A-Za-z0-9_]+)['\"]?\s*[:=]")


def redact_file(path: Path) -> None:
    """Rewrite a YAML file Hydra wrote with its secret values redacted, if it holds any."""
    if not path.exists():
        return
    if not any(is_secret_name(name) for name in _NAMED.findall(path.read_text())):
        return
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    redacted = redact_hydra_record(saved)
    if redacted != saved:
        write_text(path, OmegaConf.to_yaml(OmegaConf.create(redacted)))
