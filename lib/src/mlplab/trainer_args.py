"""``conf/trainer/lightning.yaml``: every ``lightning.Trainer`` argument with Lightning's default.

The file is generated from the Trainer's signature (``python -m mlplab.trainer_args``), and a
test fails when it no longer matches the installed Lightning. So ``trainer.fast_dev_run=true``
works without a ``+``, and a typo (``trainer.max_epoch``) is refused with the closest
argument. ``conf/trainer/default.yaml`` starts from it and changes only what mlplab chooses.

Light on purpose: the command-line error messages read the generated file, not Lightning.
"""

from __future__ import annotations

import difflib
import inspect
from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

from mlplab.config import conf_dir

GENERATED = Path("trainer") / "lightning.yaml"  # in the project's conf/
HEADER = """\
# Every argument of lightning.Trainer, with Lightning's own default: generated from the
# installed Lightning's signature by `python -m mlplab.trainer_args` (do not edit; a test checks
# it). conf/trainer/default.yaml starts from it. What mlplab does with each argument:
# docs/configuration.md, "Trainer arguments". callbacks and logger come from their own
# config groups.
"""


def signature_defaults() -> dict[str, object]:
    """``{argument: default}`` of ``lightning.Trainer.__init__``, in signature order."""
    import lightning as L

    parameters = inspect.signature(L.Trainer.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name != "self"}


def render() -> str:
    """The text of ``conf/trainer/lightning.yaml`` for the installed Lightning."""
    import lightning as L

    body = OmegaConf.to_yaml(OmegaConf.create(signature_defaults()), sort_keys=False)
    return f"{HEADER}# lightning {L.__version__}\n_target_: lightning.Trainer\n{body}"


@cache
def known_arguments() -> tuple[str, ...]:
    """The Trainer's arguments, read from the project's generated file (no Lightning import);
    from Lightning's signature in a project without one."""
    generated = conf_dir() / GENERATED
    if not generated.is_file():
        return tuple(signature_defaults())
    return tuple(str(k) for k in OmegaConf.load(generated) if k != "_target_")


def closest(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate a typo most likely meant, if any is close: a near spelling, or the
    abbreviation of the name's words (``learning_rate``: ``lr``) or the name of one's
    (``wd``: ``weight_decay``)."""
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if found:
        return found[0]
    return next((c for c in candidates if name in (c, _initials(c)) or c == _initials(name)), None)


def _initials(name: str) -> str:
    words = [w for w in name.lower().split("_") if w]
    return "".join(w[0] for w in words) if len(words) > 1 else name


if __name__ == "__main__":  # run in the project's root
    (conf_dir() / GENERATED).write_text(render())
    print(f"wrote {conf_dir() / GENERATED}")
