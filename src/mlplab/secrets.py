"""Secrets (API keys, tokens, passwords) kept out of everything a run writes or prints.

A key is secret by its whole name, not by a word inside it: ``api_key``, ``token``,
``password``, ``secret``, ``credentials`` and names ending in ``_token``, ``_secret``,
``_password``, ``_api_key`` (``wandb_token``: secret; ``max_tokens``, ``num_keypoints``: not).
A secret should come from the environment (``${oc.env:NAME}`` in a config, or the variable a
library reads itself, like ``WANDB_API_KEY``): then what is written is the interpolation,
which a resumed run resolves again, never the value.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECRET_NAME = re.compile(
    r"^(api_?key|token|password|passwd|secret|credentials?)$"
    r"|_(api_?key|token|secret|password|passwd)$",
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
