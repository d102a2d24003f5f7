"""What the entry points share before and around Hydra: a user's mistake is one line and exit status 2.

`preflight` composes the config from the command line as Hydra will (no torch imported, well under a second) and
turns Hydra's composition errors into one line with a suggestion: the closest key for a typo, the closest option
for a group choice, how to quote a path with a space. `user_errors` wraps the task function: a `UserError`
(raised anywhere, also inside `hydra.utils.instantiate` or a DataLoader worker) is printed as `error: <message>`
and exits 2; any other exception is an internal error and keeps its traceback.
"""

from __future__ import annotations

import difflib
import functools
import re
import string
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf

from backbones.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
USER_ERROR_STATUS = 2
# keys that moved: old -> new (the input statistics belong to the weights, not to the data)
MOVED = {"backbone.lr_mult": "task.module.backbone_lr_mult", "data.mean": "backbone.mean", "data.std": "backbone.std"}
# keys that went away: old -> why
RETIRED = {"data.size_divisibility": "segmentation batches are padded to a multiple of the backbone's own "
                                     "size_divisibility (its largest stride), recorded with the model"}
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_STATUS)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def user_error(err: BaseException) -> UserError | None:
    """The `UserError` behind `err` (itself, or the cause Hydra's instantiate or Lightning wrapped), if any."""
    return next((e for e in _chain(err) if isinstance(e, UserError)), None)


def one_line(err: BaseException) -> str:
    """The error's own message; one re-raised from a DataLoader worker carries the worker's traceback: drop it."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if re.match(r"^[\w.]+: ", last) else last
    return text


def user_errors(fn: F) -> F:
    """Decorate a Hydra task function: a UserError ends the run with its one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            found = user_error(err)
            if found is None:
                raise
            fail(one_line(found))

    return wrapper  # type: ignore[return-value]


def config_groups() -> str:
    """`group: option, option, ...` per config group, for `--help`: the yaml files under conf/ plus the registry's
    `backbone` and `neck` entries. Hydra's own `$APP_CONFIG_GROUPS` composes the config once per group and option
    (about 5 s here); this reads file names."""
    from hydra.core.config_store import ConfigStore

    groups: dict[str, set[str]] = {}
    for path in (ROOT / "conf").rglob("*.yaml"):
        group = path.parent.relative_to(ROOT / "conf").as_posix()
        if group != "." and not group.startswith("hydra"):
            groups.setdefault(group, set()).add(path.stem)
    for group in ("backbone", "neck"):
        stored = ConfigStore.instance().repo.get(group, {})
        groups.setdefault(group, set()).update(name.removesuffix(".yaml") for name in stored)
    return "\n".join(f"{group}: {', '.join(sorted(options))}" for group, options in sorted(groups.items()))


# ------------------------------------------------------------------ composition errors, before Hydra runs


def _keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            yield path
            yield from _keys(node._get_node(key), f"{path}.")


def suggest_key(cfg: DictConfig, key: str) -> str:
    """' Did you mean <closest>?' for an unknown dotted key, from the keys at the same level (else anywhere)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if isinstance(node, DictConfig):
        close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=2, cutoff=0.6)
        close = [f"{parent}.{c}" if parent else c for c in close]
    else:
        close = difflib.get_close_matches(key, list(_keys(cfg)), n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    from backbones.hydra_configs import compose_hydra

    return compose_hydra(config_name, overrides)


def _explain(err: Exception, config_name: str, overrides: list[str], script: str) -> str:
    """One line for a Hydra composition error: what was wrong with which argument, and the fix."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(err)
    if isinstance(err, OverrideParseException):
        bad = next((o for o in overrides if o in text), None)
        if bad is not None and "=" not in bad:
            return (f"{bad!r} is not a key=value override. A path with a space must be quoted as one argument, "
                    f"e.g. data.root=\"'/my data/set'\"; see `python {script} --help`")
        return f"cannot read the override {bad or ''}: {text.splitlines()[-2] if len(text.splitlines()) > 1 else text}"
    match = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if isinstance(err, MissingConfigException) or match:
        if match:
            group, choice = match.groups()
            options = [o.strip() for o in re.findall(r"^\t(.+)$", text, re.M) if "=" not in o]
            close = difflib.get_close_matches(choice, options, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            return f"{group}={choice} is not a known {group}.{hint} Known: {', '.join(options)}"
        return text.splitlines()[0]
    match = (re.search(r"An item is already at '([^']+)'", text)
             or re.search(r"Could not (?:override|delete from config) '([^']+)'", text))
    if match:
        key = match.group(1)
        rest = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=") and o.lstrip("+~") != key]
        try:
            base = _compose(config_name, rest)
        except Exception:
            base = None
        if "Could not append" in text:
            return f"{key} already exists: set it with {key}=<value> (no +)"
        if key in MOVED:
            return f"{key} is now {MOVED[key]}: set {MOVED[key]}=<value>"
        if key in RETIRED:
            return f"{key} is no longer an option: {RETIRED[key]}"
        hint = suggest_key(base, key) if base is not None else ""
        return (f"{key} is not a config key.{hint} `python {script} --cfg job` prints every key; "
                f"+{key}=<value> adds a new one")
    return text.splitlines()[0]


def print_help(config_name: str, overrides: Sequence[str]) -> None:
    """`--help` as Hydra prints it from `hydra.help.template`, without Hydra's per-option composition (5 s here)."""
    from hydra.errors import HydraException

    try:
        cfg = _compose(config_name, overrides)
    except HydraException as err:  # an override that does not compose: its own one-line error
        fail(_explain(err, config_name, list(overrides), config_name))
    template = OmegaConf.select(cfg, "hydra.help.template")
    job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    print(string.Template(template).safe_substitute(
        APP_CONFIG_GROUPS=config_groups(), HYDRA_CONFIG_GROUPS="", FLAGS_HELP="see --hydra-help",
        CONFIG=OmegaConf.to_yaml(job)))


def preflight(config_name: str, argv: Sequence[str], script: str,
              check: Callable[[DictConfig, dict[str, str]], None] | None = None) -> None:
    """Compose the config from `argv` as Hydra will; on a composition error or a failed `check(cfg, choices)` print
    one line and exit 2. Help, info and multirun command lines are left to Hydra (a sweep's values are lists)."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:  # Hydra's own parser will print its usage error
        return
    if args.help and not (args.config_path or args.config_name or args.config_dir):
        print_help(config_name, args.overrides)
        sys.exit(0)
    if (args.help or args.hydra_help or args.info or args.shell_completion or args.multirun or args.config_path
            or args.config_name or args.config_dir or args.experimental_rerun):
        return
    try:
        cfg = _compose(config_name, args.overrides)
    except HydraException as err:
        fail(_explain(err, config_name, list(args.overrides), script))
    except UserError as err:
        fail(one_line(err))
    if check is not None:
        choices = dict(cfg.hydra.runtime.choices) if "hydra" in cfg else {}
        try:
            check(cfg, choices)
        except UserError as err:
            fail(one_line(err))
