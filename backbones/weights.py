"""Pretrained weights for backbones: a torchvision weights name, a timm pretrained tag, a URL or a local file.

Every file is read by `checkpoint_file.read_checkpoint` (`torch.load(weights_only=True)` or safetensors), so
loading never runs pickled code. Downloads go to the standard caches (torch hub's `<hub dir>/checkpoints`, Hugging
Face's hub cache); offline, the error says which file is missing and where to put it. The state dict is then mapped
onto the model key by key and the result counted: loaded, missing, unexpected (e.g. the dropped classifier `fc.*`)
and shape-mismatched (skipped). Weights that would leave more than `PARTIAL_LIMIT` of the backbone's tensor
elements at their random initialisation (another architecture's weights) are refused unless the user opts in.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hf_constants
from torch import Tensor, nn

from .catalog import IMAGENET_MEAN, IMAGENET_STD
from .checkpoint_file import read_checkpoint
from .errors import UserError
from .registry import BACKBONES

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
# containers that wrap a state dict: training scripts' `{"model": ...}`, Lightning's `{"state_dict": ...}`
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
TIMM_DEFAULT = ("timm", "default", "pretrained")
NO_WEIGHTS = ("", "none", "null", "random")
# weights leaving more than this fraction of the backbone's tensor elements (parameters and BatchNorm statistics)
# unloaded, missing from the file or of another shape, are refused unless the user opts in
PARTIAL_LIMIT = 0.10


class WeightsError(UserError, ValueError):
    """Weights could not be found, read or matched; the message names the file and the fix."""


class PartialWeightsError(WeightsError):
    """The weights fit too little of the backbone (another architecture's?); the message names the opt-in."""


@dataclass
class LoadReport:
    """What `load_matching` did with a state dict. `mismatched` maps a key to (file shape, model shape)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    adapted: list[str] = field(default_factory=list)  # first conv averaged / repeated for in_chans != 3
    prefix: str = ""  # stripped from the file's keys
    elements: int = 0  # tensor elements of the model's state dict (num_batches_tracked aside)
    unloaded_elements: int = 0  # of those, missing or shape-mismatched: left at their fresh initialisation

    @property
    def unloaded_fraction(self) -> float:
        return self.unloaded_elements / self.elements if self.elements else 0.0

    def summary(self) -> str:
        text = (f"weights {self.source}: {len(self.loaded)} loaded, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched (skipped)")
        if self.prefix:
            text += f"; key prefix {self.prefix!r} stripped"
        if self.adapted:
            text += f"; {', '.join(self.adapted)} adapted to the input channels"
        if self.unexpected:
            text += f"; unexpected under {_groups(self.unexpected)}"
        if self.missing:
            text += f"; missing under {_groups(self.missing)}"
        if self.mismatched:
            text += f"; mismatched: {_first(list(self.mismatched))}"
        if self.unloaded_elements:
            text += f"; {self.unloaded_fraction:.1%} of the model's tensor elements not loaded"
        return text

    def details(self) -> str:
        lines = [f"missing: {', '.join(self.missing) or '-'}", f"unexpected: {', '.join(self.unexpected) or '-'}"]
        lines += [f"shape mismatch {k}: file {list(a)} vs model {list(b)}" for k, (a, b) in self.mismatched.items()]
        return "\n".join(lines)

    def log(self, verbose: bool = False) -> None:
        level = logging.WARNING if self.missing or self.mismatched else logging.INFO
        log.log(level, "%s", self.summary())
        if verbose:
            log.info("%s\n%s", self.source, self.details())

    def check_strict(self) -> None:
        if self.missing or self.mismatched:
            raise WeightsError(
                f"weights {self.source} do not fit the model (backbone.weights_strict=true):\n{self.details()}\n"
                "Set backbone.weights_strict=false to load what fits and skip the rest."
            )


def _groups(keys: list[str]) -> str:
    # top-level module names with counts: "fc (2), layer4 (30)"
    counts = Counter(k.split(".")[0] for k in keys)
    return ", ".join(f"{name} ({n})" for name, n in counts.most_common(6)) + (" ..." if len(counts) > 6 else "")


def _first(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n})" if len(keys) > n else "")


# ---------------------------------------------------------------- reading files


def unwrap_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    """The `{name: Tensor}` inside `obj`: itself, or under `state_dict` / `model` / ... (nested wrappers too)."""
    for _ in range(4):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    found = f"a dict with keys {_first([str(k) for k in obj], 8)}" if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(
        f"{source} holds {found}, not a state dict: expected {{name: tensor}} or one wrapped under "
        f"{' / '.join(repr(k) for k in WRAPPER_KEYS)}"
    )


def read_state_dict(path: str | Path, what: str = "backbone.weights=") -> dict[str, Tensor]:
    """A local `.pth` / `.pt` / `.bin` / `.ckpt` or `.safetensors` file, read by `read_checkpoint` (weights_only)
    -> its state dict. `what` names the option in messages."""
    return unwrap_state_dict(read_checkpoint(path, what), str(path))


# ---------------------------------------------------------------- downloads


def hub_cache_path(url: str) -> Path:
    """Where `torch.hub.load_state_dict_from_url` keeps `url`: `<torch.hub.get_dir()>/checkpoints/<file name>`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why `url`'s host cannot be reached (one connection attempt of at most `timeout` s), or None if it can or if
    a proxy is configured (the download library goes through it; a direct attempt would prove nothing). Offline,
    a download then fails in seconds instead of after the libraries' retries."""
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return None
    except OSError as err:  # DNS failure, refused, unreachable network, timeout
        return f"{parsed.hostname} unreachable: {err}"


def download_state_dict(url: str) -> dict[str, Tensor]:
    """`url` through torch hub's cache (downloaded once), read by `read_checkpoint`; offline and uncached ->
    WeightsError naming the path."""
    cached = hub_cache_path(url)
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:  # writes a temporary file and renames it: an interrupted download leaves no truncated cache entry
            if (why := unreachable(url)) is not None:
                raise OSError(why)
            torch.hub.download_url_to_file(url, str(cached), progress=True)
        except (OSError, TimeoutError) as err:  # URLError, HTTPError, socket timeouts, refused connections
            raise WeightsError(
                f"could not download {url} ({err}) and it is not cached. Without network, fetch the file elsewhere "
                f"and put it at {cached} (torch hub's cache: $TORCH_HOME/hub/checkpoints), or pass the local file "
                "as backbone.weights=/path/to/file.pth"
            ) from err
    return unwrap_state_dict(read_checkpoint(cached, f"backbone.weights={url}, cached as"), url)


def torchvision_weights(arch: str, weights: str) -> Any:
    """`IMAGENET1K_V2`, `DEFAULT` or `ResNet50_Weights.IMAGENET1K_V2` for torchvision model `arch` -> the
    `WeightsEnum` member (its `url`, its `transforms()`)."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    name = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    try:
        return enum[name.upper()]
    except KeyError:
        known = ", ".join(dict.fromkeys(["DEFAULT", *enum.__members__]))  # DEFAULT is also an enum alias
        raise WeightsError(f"torchvision has no weights {weights!r} for {arch}; known: {known} "
                           "(or pass a URL or a local .pth / .safetensors file)") from None


def timm_full_name(arch: str, tag: str) -> str:
    """`arch.tag`; `tag` in `timm`/`default`/`pretrained` means timm's default tag (the bare `arch`)."""
    return arch if tag.lower() in TIMM_DEFAULT else tag if tag.startswith(arch + ".") else f"{arch}.{tag}"


def timm_pretrained_cfg(arch: str, tag: str) -> Any:
    """timm's pretrained cfg of `arch.tag` (`tag` in `timm`/`default`: timm's default tag); None if timm has none."""
    import timm.models

    try:
        return timm.models.get_pretrained_cfg(timm_full_name(arch, tag))
    except RuntimeError:
        return None


def _hf_cached(repo_id: str, filename: str | None = None) -> bool:
    """True when the Hugging Face cache already holds the weights file (timm tries safetensors, then the .bin)."""
    from huggingface_hub import try_to_load_from_cache

    if hf_constants.HF_HUB_OFFLINE:
        return True  # the user asked for the cache only: let huggingface_hub say what is missing
    repo, _, revision = repo_id.partition("@")
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo, n, revision=revision or None), str) for n in names)


def timm_state_dict(arch: str, tag: str) -> tuple[dict[str, Tensor], str]:
    """timm's pretrained weights `arch.tag` (`tag` in `timm`/`default`: timm's default tag) from the Hugging Face
    hub (or the cfg's URL), as timm's own `pretrained=True` resolves them."""
    import timm

    cfg = timm_pretrained_cfg(arch, tag)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        known = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise WeightsError(f"timm has no pretrained weights {timm_full_name(arch, tag)!r}; pretrained tags of "
                           f"{arch}: {known}")
    name = f"{cfg.architecture}.{cfg.tag}"
    if not cfg.hf_hub_id:
        return download_state_dict(cfg.url), name
    try:
        args = (cfg.hf_hub_id, cfg.hf_hub_filename) if cfg.hf_hub_filename else (cfg.hf_hub_id,)
        if not _hf_cached(*args) and (why := unreachable(hf_constants.ENDPOINT)) is not None:
            raise OSError(why)  # offline: fail now, not after huggingface_hub's retries (about 45 s)
        return unwrap_state_dict(timm.models.load_state_dict_from_hf(*args, weights_only=True), name), name
    except Exception as err:  # huggingface_hub raises several error types for offline / missing files
        from huggingface_hub.constants import HF_HUB_CACHE

        repo = cfg.hf_hub_id.split("@")[0]
        raise WeightsError(
            f"could not fetch timm weights {name} from the Hugging Face hub repo {repo} ({type(err).__name__}: "
            f"{err}). Without network: run `hf download {repo}` on a machine with network and copy "
            f"{Path(HF_HUB_CACHE) / ('models--' + repo.replace('/', '--'))} to the same place here (HF_HOME), or "
            "pass the downloaded model.safetensors as backbone.weights=/path/to/model.safetensors"
        ) from err


def weights_kind(text: str) -> str:
    """`backbone.weights` is a `url`, a local `file`, or the `name` of a torchvision / timm weight set."""
    if text.startswith(("http://", "https://")):
        return "url"
    path = Path(text).expanduser()
    if path.exists() or path.suffix in FILE_SUFFIXES or "/" in text or os.sep in text:
        return "file"
    return "name"


def input_stats(weights: str | None, *, source: str, arch: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) of RGB in [0, 1] that the named weights were trained with: timm's pretrained cfg of the tag
    (e.g. (0.5, 0.5, 0.5) for `resnetv2_50`'s default), torchvision's weights' own transform. None when the weights
    do not say (random init, a file, a URL): the caller's default applies. Reads metadata only, downloads nothing."""
    if not wants_weights(weights) or weights_kind(str(weights).strip()) != "name":
        return None
    text = str(weights).strip()
    if source == "timm":
        cfg = timm_pretrained_cfg(arch, text)
        return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None and cfg.mean and cfg.std else None
    if source == "torchvision":
        try:
            transform = torchvision_weights(arch, text).transforms()
        except WeightsError:
            return None  # building the backbone says which weights exist
        return tuple(transform.mean), tuple(transform.std)
    return None


def backbone_input_stats(backbone: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a model on the `backbone` config normalises its [0, 1] RGB input with: `backbone.mean` /
    `backbone.std` where set, else those of `backbone.weights` (`input_stats`), else ImageNet's (random init, weights
    files: the statistics of every built-in weight set, so a random-init run can later take pretrained weights)."""
    name = str(backbone["name"])
    arch = str(backbone.get("model_name") or name)
    stats = input_stats(backbone.get("weights"), source=BACKBONES.get(name).source, arch=arch)
    mean, std = stats or (IMAGENET_MEAN, IMAGENET_STD)
    given_mean, given_std = backbone.get("mean"), backbone.get("std")
    return (tuple(float(v) for v in (mean if given_mean is None else given_mean)),
            tuple(float(v) for v in (std if given_std is None else given_std)))


def resolve_weights(weights: str, *, source: str, arch: str) -> tuple[dict[str, Tensor], str]:
    """`backbone.weights` -> (state dict, description). `source` is the registry source (`torchvision`,
    `timm`), `arch` the torchvision / timm model name."""
    text = str(weights).strip()
    kind = weights_kind(text)
    if kind == "url":
        return download_state_dict(text), text
    if kind == "file":
        path = Path(text).expanduser()
        return read_state_dict(path), str(path)
    if source == "torchvision":
        url = torchvision_weights(arch, text).url
        return download_state_dict(url), f"{arch} {text} ({url})"
    if source == "timm":
        return timm_state_dict(arch, text)
    raise WeightsError(f"backbone {arch!r} has no named weights ({text!r}); pass a URL or a local file")


# ---------------------------------------------------------------- key matching


def _flat(key: str) -> str:
    # timm's features_only wrapper flattens top-level Sequentials: `stages.0.x` is `stages_0.x` there
    return key.replace(".", "_", 1)


def _target_of(rest: str, targets: Mapping[str, Any]) -> str | None:
    if rest in targets:
        return rest
    return _flat(rest) if _flat(rest) in targets else None


def best_prefix(keys: list[str], targets: Mapping[str, Any]) -> str:
    """The key prefix (`""`, `model.body.`, `module.`, `backbone.body.` ...) under which most keys fit `targets`."""
    counts: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if _target_of(".".join(parts[i:]), targets) is not None:
                counts[".".join(parts[:i]) + ("." if i else "")] += 1
                break
    if not counts:
        return ""
    top = max(counts.values())
    return min((p for p, n in counts.items() if n == top), key=len)


def first_conv_key(model: nn.Module) -> str | None:
    return next((f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def match_state_dict(targets: Mapping[str, Tensor], state_dict: Mapping[str, Tensor], source: str,
                     prefix: str | None = None, first_conv: str | None = None) -> tuple[dict[str, Tensor], LoadReport]:
    """Map `state_dict` onto the model keys `targets` (a model's state dict) -> (the loadable subset under the
    model's names, report).

    The common prefix is found (or given), DataParallel's `module.` and timm's flattened names are handled;
    tensors of another shape are skipped, except the `first_conv` weight of a file with another number of input
    channels, which is averaged / repeated as timm does. `num_batches_tracked` is never counted.
    """
    from timm.models import adapt_input_conv

    keys = [k for k in state_dict if not k.endswith("num_batches_tracked")]
    prefix = best_prefix(keys, targets) if prefix is None else prefix
    report = LoadReport(source, prefix=prefix)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        target = _target_of(key[len(prefix):], targets) if key.startswith(prefix) else None
        if target is None:
            if not key.endswith("num_batches_tracked"):
                report.unexpected.append(key)
            continue
        want = tuple(targets[target].shape)
        if tuple(value.shape) != want:
            adaptable = (target == first_conv and value.ndim == 4 and value.shape[1] != want[1]
                         and value.shape[0] == want[0] and value.shape[2:] == want[2:])
            if not adaptable:
                report.mismatched[target] = (tuple(value.shape), want)
                continue
            value = adapt_input_conv(want[1], value, base_chans=value.shape[1])
            report.adapted.append(target)
        out[target] = value
        if not target.endswith("num_batches_tracked"):
            report.loaded.append(target)
    report.missing = [k for k in targets if k not in out and k not in report.mismatched
                      and not k.endswith("num_batches_tracked")]
    counted = {k: v.numel() for k, v in targets.items() if not k.endswith("num_batches_tracked")}
    report.elements = sum(counted.values())
    report.unloaded_elements = sum(counted[k] for k in (*report.missing, *report.mismatched))
    return out, report


# ---------------------------------------------------------------- partial loads


def guess_backbone(state_dict: Mapping[str, Tensor], min_fill: float = 1 - PARTIAL_LIMIT) -> tuple[str, float] | None:
    """The registered backbone `state_dict` was most likely made for -> (name, fraction of its tensor elements the
    file fills): of the backbones it fills to `min_fill`, the one taking the most elements from it. Candidates are
    built on the meta device (shapes only, no memory); None when none fits."""
    best: tuple[tuple[int, float], str] | None = None
    for entry in BACKBONES.entries():
        try:
            with torch.device("meta"):
                candidate = entry.builder(in_chans=3)
        except Exception:  # a builder with required arguments (the generic `timm`)
            continue
        _, report = match_state_dict(candidate.state_dict(), state_dict, entry.name,
                                     first_conv=first_conv_key(candidate))
        score = (report.elements - report.unloaded_elements, 1 - report.unloaded_fraction)
        if score[1] >= min_fill and (best is None or score > best[0]):
            best = (score, entry.name)
    return (best[1], best[0][1]) if best else None


def likely_backbone(state_dict: Mapping[str, Tensor], backbone: str) -> tuple[str, str] | None:
    """(the override to use, why) when `state_dict` fits another registered backbone than `backbone`."""
    guess = guess_backbone(state_dict)
    if guess is None or guess[0] == backbone:
        return None
    return f"backbone={guess[0]}", f"These weights look like {guess[0]}'s (they fill {guess[1]:.0%} of it)"


def check_coverage(report: LoadReport, *, backbone: str, opt_in: str, likely: tuple[str, str] | None = None,
                   source: str | None = None, limit: float = PARTIAL_LIMIT) -> None:
    """Raise PartialWeightsError when `report` leaves more than `limit` of the backbone's tensor elements unloaded.

    `opt_in` is the override that accepts it (`backbone.weights_partial=true`); `likely` the fix and its reason,
    e.g. ("backbone=resnet50", "These weights look like resnet50's (they fill 100% of it)"); `source` names the
    weights in the message (default: the report's).
    """
    if report.unloaded_fraction <= limit:
        return
    counts = (f"{len(report.loaded)} tensors loaded, {len(report.missing)} missing, {len(report.mismatched)} "
              "shape-mismatched" + (f": {_first(list(report.mismatched), 3)}" if report.mismatched else ""))
    fix = f"{likely[1]}: pass {likely[0]}" if likely else "Use the backbone these weights were made for"
    raise PartialWeightsError(
        f"{source or report.source} would leave {report.unloaded_fraction:.0%} of the backbone {backbone} at its "
        f"random initialisation ({report.unloaded_elements:,} of {report.elements:,} tensor elements; {counts}), "
        f"more than the {limit:.0%} Cerberus accepts. {fix}, or {opt_in} to train from the "
        f"{1 - report.unloaded_fraction:.0%} that fits."
    )


def load_matching(model: nn.Module, state_dict: Mapping[str, Tensor], source: str, *, strict: bool = False,
                  partial: bool = False, verbose: bool = False, prefix: str | None = None,
                  backbone: str | None = None) -> LoadReport:
    """Load what fits of `state_dict` into `model` (in place), log the counts and return the report.

    `strict`: raise WeightsError if a model key is missing or has another shape. Unless `partial`, raise
    PartialWeightsError when more than `PARTIAL_LIMIT` of the model's tensor elements would stay unloaded, naming
    the registered backbone the weights fit if there is one (`backbone`: the model's registry name).
    """
    matched, report = match_state_dict(model.state_dict(), state_dict, source, prefix, first_conv_key(model))
    name = backbone or type(model).__name__
    if strict:
        report.check_strict()
    if not report.loaded:
        likely = likely_backbone(state_dict, name)
        raise WeightsError(f"no tensor of {source} fits the backbone {name} (keys like {_first(list(state_dict), 3)} "
                           f"vs {_first(list(model.state_dict()), 3)}): "
                           + (f"{likely[1]}: pass {likely[0]}" if likely else "the weights of another architecture?"))
    if not partial:
        check_coverage(report, backbone=name, opt_in="backbone.weights_partial=true",
                       likely=likely_backbone(state_dict, name) if report.unloaded_fraction > PARTIAL_LIMIT else None)
    model.load_state_dict(matched, strict=False)
    report.log(verbose)
    return report


def load_backbone_weights(model: nn.Module, weights: str, *, source: str, arch: str, strict: bool = False,
                          partial: bool = False, verbose: bool = False) -> LoadReport:
    """Resolve `weights` (name, tag, URL or file; see `resolve_weights`) and load what fits into `model`
    (`partial`: even if that leaves most of it random; see `load_matching`)."""
    state_dict, description = resolve_weights(weights, source=source, arch=arch)
    return load_matching(model, state_dict, description, strict=strict, partial=partial, verbose=verbose,
                         backbone=arch)


def wants_weights(weights: str | None) -> bool:
    return weights is not None and str(weights).strip().lower() not in NO_WEIGHTS
