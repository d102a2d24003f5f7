"""Read an offline W&B run (`run-<id>.wandb`) back into its config and logged metrics.

wandb >= 0.31 no longer ships a Python reader for its transaction log, so this follows the format it
writes: a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then 32 KiB blocks of records, each
`crc32 (4) | length (2) | type (1) | payload`, long payloads split FIRST/MIDDLE/LAST across blocks.
Each payload is a `wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, f"{path} is not a W&B log"
    out, pos, parts = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            break  # zero padding at the end of the file
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        parts = payload if kind in (FULL, FIRST) else parts + payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(config, history rows) of the offline run in `run_dir` (an `offline-run-*` folder)."""
    (log,) = run_dir.glob("run-*.wandb")
    config: dict = {}
    history: list[dict] = []
    for record in records(log):
        kind = record.WhichOneof("record_type")
        updates = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in updates:
            config[item.key] = json.loads(item.value_json)
        if kind == "history":
            history.append({item.key or ".".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return config, history
