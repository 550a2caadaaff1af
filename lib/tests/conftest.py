"""The library's tests run its machinery on the reference project of this repository (its
entry points, conf/ and package ``mnist_mlp``), as a user's project runs it."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pandas as pd
import pytest

from mlplab.testing import (
    QUIET_RUN,
    compose_config,
    isolated_environment,  # noqa: F401  (autouse fixture)
    small_disk,  # noqa: F401  (fixture)
    tiny_idx_dataset,
)


# -- trained checkpoints shared by the prediction and export tests ----------------------------
def houses(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A user's table: an id, numbers with gaps, a categorical column, a price and a band."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "house_id": [f"H{seed}-{i:04d}" for i in range(n)],
            "sqm": rng.uniform(30, 200, n),
            "rooms": rng.integers(1, 7, n).astype(float),
            "city": rng.choice(["north", "south", "east"], n),
        }
    )
    frame["price"] = frame.sqm * 3000 + frame.rooms * 1e4 + rng.normal(0, 2e4, n)
    frame["price"] += np.where(frame.city == "north", 1e5, 0.0)
    frame["band"] = np.where(frame.price > frame.price.median(), "dear", "cheap")
    frame.loc[[3, 8], "sqm"] = np.nan
    return frame


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
