"""Read what a W&B offline run recorded, straight from its ``run-<id>.wandb`` file.

The file is the log that ``wandb sync`` uploads: a 7-byte header, then LevelDB-style records
(4-byte CRC, 2-byte length, 1-byte type) in 32 KiB blocks, each record a protobuf
``wandb.proto.wandb_internal_pb2.Record``. Reading it checks what would reach the server.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, pending, records = _HEADER, b"", []
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # the tail of a block too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if pos + _HEADER + length > len(data):  # a record still being written
            break
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def finished_records(path: Path, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records of a finished run, once its exit record has reached the file.

    ``run.finish()`` returns once W&B's service has the exit record, but the service writes the
    file on its own thread and closes it later, so a reader in the same process can be early.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout_s:.0f} s"
        time.sleep(0.1)


def summary_and_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The final summary and the config (key -> decoded value) that the finished run recorded."""
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                key = "/".join(item.nested_key) or item.key
                summary.setdefault(key, None)
        elif kind == "config":
            for item in record.config.update:
                config["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "exit":
            summary["_exit_code"] = record.exit.exit_code
        elif kind == "run":
            summary["_name"] = record.run.display_name
            summary["_group"] = record.run.run_group
    return summary, config


def artifacts(path: Path) -> list[dict[str, Any]]:
    """The artifacts the finished run logged: name, type, aliases, metadata and, per file,
    its size and MD5 (W&B's digest: base64)."""
    return [
        {
            "name": r.artifact.name,
            "type": r.artifact.type,
            "aliases": list(r.artifact.aliases),
            "metadata": json.loads(r.artifact.metadata or "{}"),
            "files": {e.path: (e.size, e.digest) for e in r.artifact.manifest.contents},
        }
        for r in finished_records(path)
        if r.WhichOneof("record_type") == "artifact"
    ]
