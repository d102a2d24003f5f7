"""`benchmark.py --latency`: per-request latency (P50 / P95 / P99 at batch 1) and throughput (batch N) of one model
as PyTorch eager (as predict.py runs it), onnxruntime FP32 and onnxruntime INT8 (classification, segmentation), on
the same inputs in one process, the backends interleaved round by round so each sees the same machine state,
warm-up excluded; and each backend's peak memory, measured in a fresh child process (its RSS high-water mark,
VmHWM, minus its RSS after the imports, before the model is built or loaded; Linux).

The model is the task's Cerberus model from its config (random initialisation: speed does not depend on the
weights; the accuracy change of INT8 comes from `export.py quantize=int8` on a trained checkpoint).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SIZE = {"classification": 224, "segmentation": 256, "detection": 128}  # detection: the model resizes


@dataclass
class Backend:
    name: str
    run: Callable[[Any], Any]
    batch1: list[float] = field(default_factory=list)  # seconds per request
    throughput: list[float] = field(default_factory=list)  # images/s per round
    peak_mib: float = float("nan")


def build_model(task: str, backbone: str, overrides: Sequence[str], classes: int = 10) -> tuple[Any, Any, bool]:
    """(the task module's model in eval mode, its preprocessing record, whether it runs channels-last as predict.py
    runs it) from `task=... backbone=...`."""
    from backbones.hydra_configs import compose_config
    from tasks.build import build_model as build

    cfg = compose_config([f"task={task}", f"backbone={backbone}", *overrides])
    torch.manual_seed(0)
    model, record = build(cfg, classes)
    channels_last = bool(cfg.task.module.get("channels_last", False))
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model, record, channels_last


def _inputs(task: str, size: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(one request, one batch): (1, 3, S, S) and (N, 3, S, S); R-CNN requests are (3, S, S) images."""
    g = torch.Generator().manual_seed(seed)
    one = torch.rand(1, 3, size, size, generator=g)
    many = torch.rand(batch, 3, size, size, generator=g)
    return (one[0], many) if task == "detection" else (one, many)


def _eager(graph: Any, rcnn: bool) -> Callable[[torch.Tensor], Any]:
    def run(x: torch.Tensor) -> Any:
        with torch.inference_mode():
            if rcnn and x.dim() == 4:
                return [graph(image) for image in x]
            return graph(x)

    return run


def _ort(path: Path, threads: int, rcnn: bool) -> Callable[[torch.Tensor], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> Any:
        array = x.numpy()
        if rcnn and array.ndim == 4:
            return [session.run(None, {name: image}) for image in array]
        return session.run(None, {name: array})

    return run


def _calibrate_random(fp32: Path, int8: Path, size: int, images: int = 16) -> None:
    """INT8 with activation ranges from random images: right for timing, not for accuracy."""
    from .quantize import quantize_static_int8

    g = torch.Generator().manual_seed(1)
    quantize_static_int8(fp32, int8, (torch.rand(1, 3, size, size, generator=g).numpy() for _ in range(images)))


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(backends: list[Backend], one: torch.Tensor, many: torch.Tensor, requests: int, rounds: int,
            warmup: int) -> None:
    """Interleaved: each round runs `requests` batch-1 requests and one batch per backend, in turn."""
    for backend in backends:
        for _ in range(warmup):
            backend.run(one)
        backend.run(many)
    n = many.shape[0]
    for _ in range(rounds):
        for backend in backends:
            for _ in range(requests):
                start = time.perf_counter()
                backend.run(one)
                backend.batch1.append(time.perf_counter() - start)
            start = time.perf_counter()
            backend.run(many)
            backend.throughput.append(n / (time.perf_counter() - start))


PEAK_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {root!r})
import numpy as np, torch
torch.set_num_threads({threads})
import onnxruntime
def status_mib(key):  # VmRSS now, VmHWM its high-water mark (per address space: a fresh one after exec)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
from tasks.export.latency import _eager, _inputs, _ort, build_model
from tasks.export.graph import ExportGraph
one, many = _inputs({task!r}, {size}, {batch})
before = status_mib("VmRSS")
if {kind!r} == "eager":
    model, _, channels_last = build_model({task!r}, {backbone!r}, {overrides!r})
    run = _eager(ExportGraph(model).eval(), {rcnn!r})
else:
    run = _ort({path!r}, {threads}, {rcnn!r})
run(one); run(many)
peak = status_mib("VmHWM")
print(json.dumps({{"peak_mib": peak - before}}))
"""


def peak_memory(kind: str, task: str, backbone: str, overrides: Sequence[str], size: int, batch: int,
                threads: int, path: Path | None) -> float:
    """MiB the backend adds to a fresh process's peak RSS for a batch-1 request and one batch."""
    code = PEAK_SCRIPT.format(root=str(ROOT), threads=threads, task=task, size=size, batch=batch, kind=kind,
                              backbone=backbone, overrides=list(overrides), rcnn=task == "detection",
                              path=str(path) if path else "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return float("nan")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"])


def main_latency(task: str, backbone: str, size: int | None, batch: int, requests: int, rounds: int, warmup: int,
                 overrides: Sequence[str], memory: bool = True) -> str:
    """Run the measurement, return the Markdown table (and print progress)."""
    from .formats import export_onnx
    from .graph import ExportGraph

    size = size or DEFAULT_SIZE[task]
    threads = torch.get_num_threads()
    model, record, channels_last = build_model(task, backbone, overrides)
    graph = ExportGraph(model).eval()
    rcnn = graph.rcnn
    one, many = _inputs(task, size, batch)
    backends = [Backend("PyTorch eager" + (" (channels-last)" if channels_last else ""), _eager(graph, rcnn))]
    paths: dict[str, Path | None] = {backends[0].name: None}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(graph, one, fp32, {"task": task})
        backends.append(Backend("onnxruntime FP32", _ort(fp32, threads, rcnn)))
        paths["onnxruntime FP32"] = fp32
        if not rcnn:
            int8 = Path(tmp) / "model.int8.onnx"
            _calibrate_random(fp32, int8, size)
            backends.append(Backend("onnxruntime INT8", _ort(int8, threads, rcnn)))
            paths["onnxruntime INT8"] = int8
        print(f"measuring {', '.join(b.name for b in backends)}: {rounds} rounds of {requests} requests and one "
              f"batch of {batch}", flush=True)
        measure(backends, one, many, requests, rounds, warmup)
        if memory:
            for backend in backends:
                kind = "eager" if paths[backend.name] is None else "ort"
                backend.peak_mib = peak_memory(kind, task, backbone, overrides, size, batch, threads,
                                               paths[backend.name])
    return report(task, backbone, size, batch, threads, backends, rcnn)


def report(task: str, backbone: str, size: int, batch: int, threads: int, backends: list[Backend],
           rcnn: bool) -> str:
    eager = backends[0]
    base = statistics.median(eager.throughput)
    head = (f"{task}, {backbone}, {size} x {size} px, {threads} threads, torch {torch.__version__}; batch-1 "
            f"latency over {len(eager.batch1)} requests per backend, throughput at batch {batch} "
            f"({'one image per call' if rcnn else 'one call'}), median of {len(eager.throughput)} rounds")
    lines = [head, "", "| backend | P50 ms | P95 ms | P99 ms | images/s (batch "
             f"{batch}) | x eager | peak memory MiB |", "|---|---|---|---|---|---|---|"]
    for b in backends:
        ips = statistics.median(b.throughput)
        lines.append(f"| {b.name} | {1000 * percentile(b.batch1, 50):.1f} | {1000 * percentile(b.batch1, 95):.1f} | "
                     f"{1000 * percentile(b.batch1, 99):.1f} | {ips:.1f} | {ips / base:.2f} | {b.peak_mib:.0f} |")
    return "\n".join(lines)
