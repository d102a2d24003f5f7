"""export.py's body: checkpoint -> `ExportGraph` -> file with metadata -> parity check against the PyTorch model,
printed as a table. Heavy imports happen inside `export`, so argument mistakes fail in a second."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from backbones.errors import ConfigError

USAGE = "python export.py ckpt=outputs/<task>/<backbone>/<time>/checkpoints/best-epoch009.ckpt [format=onnx]"
FORMAT_NAMES = ("onnx", "torchscript", "exported_program")


def check_arguments(cfg: DictConfig) -> None:
    """`ckpt` given and existing, a known format, an integer opset."""
    if not cfg.get("ckpt"):
        raise ConfigError(f"export.py needs ckpt=<run .ckpt>, e.g. `{USAGE}`")
    if not Path(cfg.ckpt).expanduser().is_file():
        raise ConfigError(f"checkpoint {cfg.ckpt} does not exist; pass the .ckpt of a Cerberus run, e.g. `{USAGE}`")
    if cfg.format not in FORMAT_NAMES:
        raise ConfigError(f"format={cfg.format}: use one of {', '.join(FORMAT_NAMES)}")
    if cfg.format == "exported_program" and cfg.get("output") and not str(cfg.output).endswith(".pt2"):
        raise ConfigError(f"output={cfg.output}: torch.export programs are .pt2 files; name it e.g. model.pt2")
    if cfg.get("quantize") not in (None, "int8"):
        raise ConfigError(f"quantize={cfg.quantize}: use quantize=int8 (or null for FP32 only)")
    if cfg.get("quantize") and cfg.format != "onnx":
        raise ConfigError(f"quantize=int8 writes an ONNX file (onnxruntime's quantizer); use format=onnx, not "
                          f"format={cfg.format}")
    if cfg.get("quantize") and not (isinstance(cfg.calibration.num_images, int) and cfg.calibration.num_images > 0):
        raise ConfigError(f"calibration.num_images={cfg.calibration.num_images!r} must be a whole number above 0, "
                          "e.g. calibration.num_images=200")
    if not isinstance(cfg.opset, int):
        raise ConfigError(f"opset={cfg.opset!r} must be a whole number, e.g. opset=17")


def default_output(ckpt: Path, export_format: str) -> Path:
    """Beside the checkpoint: best-epoch009.ckpt -> best-epoch009.onnx (.torchscript.pt, .pt2)."""
    from .formats import FORMATS

    return ckpt.with_name(ckpt.stem + FORMATS[export_format])


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write `cfg.ckpt` in `cfg.format` and (with `cfg.check`) compare it with the model; returns {"path", "checks"}.
    Raises `ExportError` when the export fails or the file disagrees with the model."""
    from rich.console import Console

    from ..restore import load_checkpoint
    from .formats import RUNNERS, WRITERS, ExportError
    from .graph import ExportGraph
    from .metadata import build_metadata
    from .parity import compare, sample_inputs

    check_arguments(cfg)
    console = Console()
    loaded = load_checkpoint(cfg.ckpt)
    model = loaded.module.model.eval()
    graph = ExportGraph(model).eval()
    record = loaded.preprocessing
    out = Path(cfg.output).expanduser() if cfg.get("output") else default_output(loaded.path, cfg.format)
    out.parent.mkdir(parents=True, exist_ok=True)
    heads = {name: head.kind for name, head in model.heads.items()}
    for name, head in model.heads.items():  # Mask R-CNN is an R-CNN head with a mask branch
        if head.kind == "detection" and head.roi_heads.has_mask():
            heads[name] = "instance_segmentation"
    metadata = build_metadata(loaded.task, heads, loaded.class_names, loaded.category_ids, record.to_dict(),
                              graph.input_name, graph.output_names, cfg.format, loaded.path.name,
                              **({"opset": int(cfg.opset)} if cfg.format == "onnx" else {}))
    inputs = sample_inputs(graph, record, fixed_size=cfg.format == "exported_program")
    console.print(f"exporting {loaded.task} checkpoint {loaded.path} ({loaded.config.backbone.name}, "
                  f"{len(loaded.class_names)} classes) as {cfg.format}", soft_wrap=True, highlight=False)
    start = time.perf_counter()
    writer = WRITERS[cfg.format]
    if cfg.format == "onnx":
        writer(graph, inputs[0], out, metadata, opset=int(cfg.opset))
    else:
        writer(graph, inputs[0], out, metadata)
    console.print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s: "
                  f"input {graph.input_name!r} {_input_shape(graph)}, outputs {', '.join(graph.output_names)}",
                  soft_wrap=True, highlight=False)
    checks = []
    if cfg.check:
        checks = compare(graph, RUNNERS[cfg.format](out), inputs)
        console.print(_table(checks))
        failed = [c for c in checks if not c.ok]
        if failed:
            first = failed[0]
            raise ExportError(f"{out} disagrees with the PyTorch model: {first.output} at input {first.shape} "
                              f"{first.note} ({len(failed)} of {len(checks)} checks failed); the file is kept for "
                              "inspection, do not deploy it")
        console.print(f"parity: all {len(checks)} checks within tolerance on {len(inputs)} inputs "
                      "(one with no objects: the mean colour)", highlight=False)
    result: dict[str, Any] = {"path": out, "checks": checks}
    if cfg.get("quantize") == "int8":
        result.update(_quantize(cfg, loaded, out, metadata, console))
    return result


def _quantize(cfg: DictConfig, loaded: Any, fp32: Path, metadata: dict[str, Any], console: Any) -> dict[str, Any]:
    """Write <name>.int8.onnx next to the FP32 file and print its validation accuracy against FP32."""
    from .quantize import quantize_int8, validation_accuracy

    int8 = fp32.with_name(fp32.stem + ".int8.onnx")
    seconds, seen = quantize_int8(fp32, int8, loaded, int(cfg.calibration.num_images), metadata,
                                  str(cfg.calibration.method))
    console.print(f"wrote {int8} ({int8.stat().st_size / 2**20:.1f} MiB, FP32 {fp32.stat().st_size / 2**20:.1f} "
                  f"MiB) in {seconds:.1f} s: static INT8, calibrated on {seen} training images "
                  f"({cfg.calibration.method})", soft_wrap=True, highlight=False)
    accuracy = validation_accuracy(fp32, int8, loaded, cfg.get("val_images"))
    console.print(f"validation {accuracy.metric} on {accuracy.images} images: FP32 {accuracy.fp32:.4f}, INT8 "
                  f"{accuracy.int8:.4f} ({accuracy.change_points:+.2f} points)", highlight=False)
    return {"int8_path": int8, "accuracy": accuracy, "calibration_images": seen}


def _input_shape(graph: Any) -> str:
    return "(3, height, width), one image per call" if graph.rcnn else "(batch, 3, height, width)"


def _table(checks: list[Any]) -> Any:
    from rich.table import Table

    table = Table(title="Exported file against the PyTorch model")
    for column in ("input", "output", "max |difference|", "tolerance", "detections", "result"):
        table.add_column(column, no_wrap=column in ("input", "output"))
    for c in checks:
        table.add_row("x".join(str(s) for s in c.shape), c.output, f"{c.difference:.2e}", f"{c.tolerance:.0e}",
                      "" if c.count is None else str(c.count), "ok" if c.ok else f"[red]{c.note}[/]")
    return table
