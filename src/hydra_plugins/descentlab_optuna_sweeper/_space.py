"""The search space of `hydra/sweeper=descentlab_optuna`: Hydra override strings -> Optuna distributions.

The grammar is hydra-optuna-sweeper's (facebookresearch/hydra, plugins/hydra_optuna_sweeper, `_impl.py`
`create_optuna_distribution_from_override`), so a command line written for that plugin means the same here:

| override                               | Optuna distribution                              |
|----------------------------------------|--------------------------------------------------|
| `k=interval(a,b)`                      | FloatDistribution(a, b)                          |
| `k=tag(log,interval(a,b))`             | FloatDistribution(a, b, log=True)                |
| `k=int(interval(a,b))`                 | IntDistribution(a, b) (`tag(log, ...)`: log=True) |
| `k=choice(x,y,z)`, `k=x,y,z`           | CategoricalDistribution((x, y, z))               |
| `k=range(a,b,s)` (ints / floats)       | IntDistribution / FloatDistribution(a, last, step=s) |
| `k=shuffle(range(...))`                | CategoricalDistribution(the range's values)      |
| `k=v` (no sweep)                       | fixed: passed to every trial as written          |

One deliberate difference: Hydra's `range(a,b,s)` excludes `b` (as Python's does, and as Hydra's basic sweeper
runs it); the plugin passed `b` itself as the inclusive upper end. Here the upper end is the range's last value.
`glob(...)` has no distribution and is refused. Parsing uses Hydra's public `OverridesParser`, nothing private.
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class SearchSpaceError(HydraException):
    """A search space Optuna cannot take (train.py prints it as one `error:` line and exits 2)."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: the name Optuna records (`optimizer.lr`), the key as it goes back into an override
    (`+model.x` keeps its `+`), and its distribution."""

    name: str
    key: str
    distribution: BaseDistribution


@dataclass
class SearchSpace:
    dimensions: dict[str, Dimension] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> the override as typed (`dataset=digits`)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones as typed, then one `key=value` per searched key."""
        searched = [f"{d.key}={override_value(params[d.name])}" for d in self.dimensions.values()]
        return [*self.fixed.values(), *searched]

    def signature(self, keep: Callable[[str], bool] = lambda key: True) -> str:
        """Stable text of the space and the fixed overrides whose key `keep` accepts (hydra.* always left out:
        where a sweep's files go and how it launches do not change what it searches), for a derived study name."""
        fixed = sorted(v for k, v in self.fixed.items() if not k.startswith("hydra") and keep(k))
        space = sorted(f"{name}={d.distribution!r}" for name, d in self.dimensions.items())
        return json.dumps({"fixed": fixed, "space": space})

    def digest(self, *extra: str, keep: Callable[[str], bool] = lambda key: True) -> str:
        return hashlib.sha1("\n".join([self.signature(keep), *extra]).encode()).hexdigest()[:10]


def override_value(value: Any) -> str:
    """A parameter value as Hydra reads it back: null/true/false, floats with all their digits."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _categorical(override: Override, ordered: bool = False) -> CategoricalDistribution:
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    if ordered:  # shuffle(range(...)): the same choices in a stable order, so the study's name stays the same
        choices.sort()
    for choice in choices:
        if not isinstance(choice, str | int | float | bool | type(None)):
            raise SearchSpaceError(f"search space {override.input_line!r}: a choice must be a plain value "
                                   f"(str, int, float, bool, null), not {choice!r}")
    if not choices:
        raise SearchSpaceError(f"search space {override.input_line!r}: no values to choose from")
    return CategoricalDistribution(choices)


def _range(override: Override, value: RangeSweep) -> BaseDistribution:
    if value.shuffle:
        return _categorical(override, ordered=True)
    values = list(override.sweep_iterator())
    if value.start is None or value.stop is None or not values:
        raise SearchSpaceError(f"search space {override.input_line!r}: an empty range")
    step = value.step if value.step is not None else 1
    if step <= 0:
        raise SearchSpaceError(f"search space {override.input_line!r}: the step must be positive, not {step}")
    if all(isinstance(v, int) for v in (value.start, value.stop, step)):
        return IntDistribution(int(values[0]), int(values[-1]), step=int(step))
    return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))


def _interval(override: Override, value: IntervalSweep) -> BaseDistribution:
    start, end = value.start, value.end
    if start is None or end is None or not start < end:
        raise SearchSpaceError(f"search space {override.input_line!r}: an interval needs start < end")
    log = "log" in value.tags
    if log and start <= 0:
        raise SearchSpaceError(f"search space {override.input_line!r}: a log interval needs start > 0")
    unknown = set(value.tags) - {"log"}
    if unknown:
        raise SearchSpaceError(f"search space {override.input_line!r}: unknown tag(s) {sorted(unknown)}; "
                               "allowed: log")
    if isinstance(start, int) and isinstance(end, int):  # int(interval(...)): Hydra keeps floats otherwise
        return IntDistribution(start, end, log=log)
    return FloatDistribution(float(start), float(end), log=log)


def distribution(override: Override) -> BaseDistribution | None:
    """The override's distribution, or None for a fixed value."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return _categorical(override)
    if isinstance(value, RangeSweep):
        return _range(override, value)
    if isinstance(value, IntervalSweep):
        return _interval(override, value)
    raise SearchSpaceError(f"search space {override.input_line!r}: {type(value).__name__.lower()} has no Optuna "
                           "distribution; allowed: interval(a,b), tag(log,interval(a,b)), int(interval(a,b)), "
                           "choice(...), a,b,c, range(...)")


def parse_space(params: Mapping[str, str] | None, arguments: Iterable[str]) -> SearchSpace:
    """The space from the sweeper's `params` (key -> override value) and the command line's overrides; a key on
    the command line replaces the same key in `params`. Raises SearchSpaceError for a grammar error."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    parser = OverridesParser.create()
    space = SearchSpace()
    for line in lines:
        try:
            override = parser.parse_override(line)
        except HydraException as exc:
            raise SearchSpaceError(f"search space {line!r}: {str(exc).splitlines()[0]}") from None
        name = override.key_or_group if override.package is None else f"{override.key_or_group}@{override.package}"
        space.dimensions.pop(name, None)
        space.fixed.pop(name, None)
        dist = distribution(override)
        if dist is None:
            space.fixed[name] = str(override.input_line)
        else:
            if override.is_delete() or name.split("/", 1)[0].split(".", 1)[0] == "hydra":
                raise SearchSpaceError(f"search space {line!r}: only config values can be searched, "
                                       "not deletions or hydra.* keys")
            space.dimensions[name] = Dimension(name, override.get_key_element(), dist)
    return space


__all__ = ["Dimension", "SearchSpace", "SearchSpaceError", "distribution", "override_value", "parse_space"]
