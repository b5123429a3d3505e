"""The command line's overrides, composed as Hydra will compose them, before Hydra starts: what Hydra
would refuse while composing (an unknown key or group, a group option that does not exist, a value of
the wrong type) is refused here in rnnbench's one format (`Error in config:`, exit 2, rnnbench.errors),
with the nearest key, group or option where a typo is likely, instead of Hydra's advice to append the
key (`use +cel=gru`), which for a mistyped name is wrong.

A sweep's overrides are checked at their first value (the sweep itself checks every job:
`callbacks.ValidateConfig`); Hydra's own keys (`hydra.*`, `hydra/...`) and what this check cannot
compose (an Optuna interval) are left to Hydra.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from rnnbench.errors import ConfigError
from rnnbench.run.config import register_schemas


def _hydra_args(argv: Sequence[str]):
    from hydra._internal.utils import get_args_parser  # the parser `hydra.main` itself uses

    return get_args_parser().parse_args(list(argv))


def _first_points(overrides: list[str]) -> list[str]:
    """Each override at its first value (a sweep's `a,b` -> `a`); Hydra's own keys left out."""
    parser = OverridesParser.create()
    points = []
    for override in parser.parse_overrides(overrides):
        if override.key_or_group.startswith("hydra") and override.key_or_group != "hydra.searchpath":
            continue  # Hydra's own keys are Hydra's to check; a search path changes what composes
        if override.is_sweep_override():
            try:
                first = next(iter(override.sweep_string_iterator()))
            except Exception:  # an interval (Optuna draws it): nothing to check at composition
                continue
            points.append(f"{override.get_key_element()}={first}")
        else:
            points.append(override.input_line)
    return points


def _groups(search_path: list[Path]) -> set[str]:
    return {d.name for root in search_path if root.is_dir() for d in root.iterdir()
            if d.is_dir() and d.name not in ("schema", "hydra")}


def _nearest(word: str, candidates: Sequence[str]) -> str | None:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def check(argv: Sequence[str], conf_dir: str) -> None:
    """Compose the config of `argv` (rnnbench's or a user's --config-dir) and raise a ConfigError in
    rnnbench's format for what Hydra would refuse; do nothing if it composes (or cannot be checked)."""
    try:
        args = _hydra_args(argv)
    except SystemExit:  # argparse's own error: Hydra reports it
        return
    if args.help or args.hydra_help or args.shell_completion or args.info or args.config_path:
        return  # (another primary config folder, -cp: composed by Hydra alone)
    try:
        points = _first_points(list(args.overrides))
    except OverrideParseException:
        return  # Hydra's parser message (with the column) is clearer than anything here
    search = [Path(conf_dir)] + ([Path(args.config_dir).resolve()] if args.config_dir else [])
    extra = [f"hydra.searchpath=[file://{search[1]}]"] if args.config_dir else []
    try:
        _compose(conf_dir, args.config_name or "config", [*extra, *points])
    except (ConfigCompositionException, MissingConfigException, OmegaConfBaseException) as e:
        raise ConfigError(_explain(e, points, conf_dir, args.config_name or "config", extra, search)) from None
    except Exception:  # anything else is not a composition problem: Hydra reports it as it would
        return


def _compose(conf_dir: str, name: str, overrides: list[str]) -> DictConfig:
    register_schemas()  # the schema/* groups the config files name (`run.config`)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3", job_name="rnnbench"):
            return compose(name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _failing_override(error: Exception, points: list[str]) -> str | None:
    """The override Hydra names in its message (`Could not override 'x'`, `... override x=y`)."""
    text = str(error)
    for point in points:
        key = point.split("=", 1)[0].lstrip("+~")
        if f"'{key}'" in text or f" {point}" in text or f"'{key.split('.')[-1]}'" in text:
            return point
    return None


def _explain(error: Exception, points: list[str], conf_dir: str, name: str, extra: list[str],
             search: list[Path]) -> str:
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    point = _failing_override(error, points)
    if isinstance(error, MissingConfigException) or "Could not find" in str(error):
        return _missing_option(str(error), points, search)
    if point is None:
        return _hydra_message(error)
    key, _, value = point.lstrip("+~").partition("=")
    if isinstance(cause, ConfigKeyError) or "Could not override" in str(error):
        return _unknown_key(key, value, point, points, conf_dir, name, extra, search)
    if "ListConfig" in str(cause) or "list or tuple" in str(cause):
        example = f"[{value},{2 * int(value)}]" if value.isdigit() else f"[{value}]"
        return (f"{key}={value} is not allowed: {key} takes a list, e.g. {key}={example} "
                f"(in a shell, quote it: '{key}={example}')")
    return f"{point}: {_first_line(cause)}"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _hydra_message(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        lines.append(_first_line(cause))
    return "\n".join(lines)


def _missing_option(message: str, points: list[str], search: list[Path]) -> str:
    """`cell=lstmm`: the group's options, the nearest first."""
    for point in points:
        group, _, option = point.lstrip("+~").partition("=")
        folders = [root / group for root in search if (root / group).is_dir()]
        if not folders or f"'{group}/{option}'" not in message:
            continue
        options = sorted({f.stem for folder in folders for f in folder.glob("*.yaml")})
        near = _nearest(option, options)
        hint = f"did you mean {group}={near}? " if near else ""
        return f"{group}={option}: config group '{group}' has no option '{option}'; {hint}choose one of {', '.join(options)}"
    return message.strip().split("\n\n")[0]


def _unknown_key(key: str, value: str, point: str, points: list[str], conf_dir: str, name: str,
                 extra: list[str], search: list[Path]) -> str:
    """`cel=gru`, `model.hiden_size=8`: the nearest group or key of the config the other overrides compose."""
    parent, _, leaf = key.rpartition(".")
    try:
        others = _compose(conf_dir, name, [*extra, *(p for p in points if p != point)])
    except Exception:
        others = None
    if others is not None and parent and OmegaConf.select(others, parent) is None:
        head, _, rest = key.partition(".")  # the first name is the unknown one: `celll.hidden`
        near = _nearest(head, sorted(set(map(str, others.keys())) | _groups(search)))
        hint = f" Did you mean {near}.{rest}={value}?" if near else ""
        return f"{key}={value}: the config has no key or config group '{head}'.{hint}"
    keys: list[str] = []
    if others is not None:
        node: Any = OmegaConf.select(others, parent) if parent else others
        if isinstance(node, DictConfig):
            keys = [str(k) for k in node.keys() if not str(k).startswith("_")]  # not _target_, _partial_
    candidates = sorted(set(keys) | (_groups(search) if not parent else set()))
    near = _nearest(leaf, candidates)
    where = f"'{parent}'" if parent else "the config"
    kind = "key or config group" if not parent else "key"
    lines = [f"{key}={value}: {where} has no {kind} '{leaf}'."]
    if near:
        lines.append(f"Did you mean {f'{parent}.' if parent else ''}{near}={value}?")
    if candidates:
        lines.append(f"{'Keys and groups' if not parent else 'Its keys'}: {', '.join(candidates)}.")
    lines.append(f"(To add a key of your own on purpose: +{key}={value}.)")
    return "\n".join(lines)
