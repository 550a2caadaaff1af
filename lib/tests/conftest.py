"""The library's tests run its machinery on the reference project of this repository (its
entry points, conf/ and package ``mnist_mlp``), as a user's project runs it."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from mlplab.testing import (
    QUIET_RUN,
    compose_config,
    default_signal_handlers,  # noqa: F401  (autouse fixture)
    houses,
    isolated_environment,  # noqa: F401  (autouse fixture)
    small_disk,  # noqa: F401  (fixture)
    tiny_idx_dataset,
)


# -- trained checkpoints shared by the prediction and export tests ----------------------------
@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A short MLP run on the bundled digits: its run dir."""
    out = tmp_path_factory.mktemp("digits")
    from mnist_mlp.train import train

    overrides = [*QUIET_RUN, "trainer.max_epochs=2", "trainer.limit_train_batches=10"]
    train(compose_config(overrides, out))
    return out


@pytest.fixture(scope="session")
def table_runs(tmp_path_factory):
    """A regression (price) and a classification (band) model of the same table."""
    root = tmp_path_factory.mktemp("tables")
    path = root / "houses.csv"
    houses().to_csv(path, index=False)
    from mnist_mlp.train import train

    runs = {}
    for target in ("price", "band"):
        out = root / target
        features = "data.features=[sqm,rooms,city]"
        overrides = [*QUIET_RUN, "data=table", f"data.path={path}", f"data.target={target}"]
        train(compose_config([*overrides, features, "trainer.max_epochs=40"], out))
        runs[target] = out
    return runs


@pytest.fixture
def mirror(tmp_path):
    """A small MNIST-format data set served over HTTP from 127.0.0.1; yields (url, md5s)."""
    root = tmp_path / "mirror"
    root.mkdir()
    contents = tiny_idx_dataset()
    for name, data in contents.items():
        (root / name).write_bytes(data)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in contents.items()}
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5, root
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
