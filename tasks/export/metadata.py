"""What travels inside an exported file, so that the file alone is enough to predict: the task and heads, class names
(and COCO category ids), the preprocessing record, the graph's input and output names, and the versions that wrote
it. Stored as one JSON string: ONNX `metadata_props["cerberus"]`, TorchScript `_extra_files["cerberus.json"]`,
ExportedProgram `extra_files["cerberus.json"]`.

Only the standard library here: the ONNX predictor reads it with onnxruntime, numpy and Pillow alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

KEY = "cerberus"
FILE = "cerberus.json"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """Cerberus, torch, torchvision (and onnx when installed) versions of the exporting environment."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package, key in (("cerberus-vision", "cerberus"), ("torch", "torch"), ("torchvision", "torchvision"),
                         ("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        try:
            out[key] = version(package)
        except PackageNotFoundError:
            continue
    return out


def build_metadata(task: str, heads: Mapping[str, str], class_names: list[str], category_ids: list[int] | None,
                   preprocessing: Mapping[str, Any], input_name: str, output_names: list[str], export_format: str,
                   source: str, **extra: Any) -> dict[str, Any]:
    """The metadata dict; `heads`: head name -> kind, in the model's order."""
    return {"format_version": FORMAT_VERSION, "task": task, "heads": dict(heads), "class_names": list(class_names),
            "category_ids": list(category_ids) if category_ids else None, "preprocessing": dict(preprocessing),
            "input": input_name, "outputs": list(output_names), "export_format": export_format,
            "source_checkpoint": source, "versions": versions(), **extra}


def dumps(metadata: Mapping[str, Any]) -> str:
    return json.dumps(metadata, sort_keys=True)


def loads(text: str | bytes, where: str) -> dict[str, Any]:
    """The metadata of `where` (a file name, for the message); ValueError when it is not Cerberus'."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where}: its '{KEY}' metadata is not valid JSON ({err}); re-export it with "
                         "export.py") from None
    missing = [k for k in ("task", "class_names", "preprocessing", "input", "outputs") if k not in data]
    if missing:
        raise ValueError(f"{where}: its '{KEY}' metadata lacks {', '.join(missing)}; re-export it with export.py")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{where} was exported by a newer Cerberus (metadata format {data['format_version']}); "
                         "update Cerberus to read it")
    return data
