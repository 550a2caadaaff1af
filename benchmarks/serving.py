"""Cost of using a trained model: prediction throughput and serving latency, side by side.

In one process, on the same trained lesson MLP and the same 10,000 MNIST test images:

  throughput (images per second, whole test set in batches of 1024):
    plain         model(x).softmax(-1) in a torch.no_grad() loop over tensor slices
    mlplab        mlplab.predict(checkpoint, pixels): Trainer.predict on the module's predict_step
    predict.py    the command line, whole process (start-up, reading the IDX file, writing CSV)
  latency per batch (median of repeated calls, after warm-up), batch 1 and batch 256:
    pytorch       the exported serving model (scaling inside) in eager PyTorch, no_grad
    onnxruntime   the same model exported by export.py, one CPU session

    python benchmarks/serving.py --data-dir path/to/mnist
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--repeat", type=int, default=200, help="latency calls per setup")
    return parser.parse_args()


def median_seconds(call, repeat: int) -> float:
    for _ in range(10):  # warm-up: first calls allocate
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    from mlplab.resume import register_resolvers

    register_resolvers()
    with tempfile.TemporaryDirectory(prefix="mlplab-serving-") as tmp:
        measure(args, Path(tmp))


def measure(args: argparse.Namespace, tmp: Path) -> None:
    import mlplab
    import numpy as np
    import onnxruntime
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_method
    from mlplab.config import project_target
    from mlplab.data.idx import read_idx
    from mlplab.export import export_model, serving_model
    from mlplab.trained import load_trained

    run_dir = tmp / "run"
    overrides = [
        "experiment=lesson",
        f"data.data_dir={args.data_dir}",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks.lr_monitor=null",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        f"output_dir={run_dir}",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        get_method(project_target("train.train"))(compose("train", overrides=overrides))
    trained = load_trained(run_dir)
    images = Path(args.data_dir) / "t10k-images-idx3-ubyte.gz"
    pixels = read_idx(images)
    x = torch.from_numpy(pixels[:, None].astype(np.float32)) / 255.0
    net = trained.module.eval()

    def plain() -> None:
        with torch.no_grad():
            torch.cat([net(b).softmax(-1) for b in x.split(1024)])

    rows = len(pixels)
    seconds = {"plain": median_seconds(plain, 5)}
    seconds["mlplab"] = median_seconds(lambda: mlplab.predict(trained, pixels), 5)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "predict.py", f"ckpt_path={run_dir}", f"input={images}",
         f"hydra.run.dir={tmp / 'predict'}"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    seconds["predict.py"] = time.perf_counter() - start
    print(f"prediction throughput, {rows} MNIST test images (batches of 1024):")
    for name, s in seconds.items():
        ratio = s / seconds["plain"]
        print(f"  {name:<12} {rows / s:>10,.0f} images/s  ({s:.3f} s, {ratio:.2f}x plain)")

    export_model(trained, "onnx", tmp / "export")
    session = onnxruntime.InferenceSession(
        str(tmp / "export" / "model" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    served = serving_model(trained)
    raw = pixels[:, None].astype(np.float32)
    print("serving latency per batch (median):")
    for batch in (1, 256):
        chunk = raw[:batch]
        tensor = torch.from_numpy(chunk)

        def eager(t=tensor) -> None:
            with torch.no_grad():
                served(t)

        torch_s = median_seconds(eager, args.repeat)
        ort_s = median_seconds(lambda c=chunk: session.run(None, {"input": c}), args.repeat)
        print(
            f"  batch {batch:>3}: pytorch {torch_s * 1e3:.3f} ms, onnxruntime "
            f"{ort_s * 1e3:.3f} ms ({torch_s / ort_s:.2f}x faster)"
        )


if __name__ == "__main__":
    main()
