"""Risk profiles: which rules run, in which order, with which parameters, per trading plan.

A profile is a YAML file under `configs/risk/` (or any path), validated at load time into a frozen
`RiskProfile`. Each entry of `rules` names a registered rule (`rule: daily_loss`) and sets that
rule's parameters; an unknown rule or parameter is an error naming the entry and the key:

    name: intraday_breakout
    assets:
      BTCUSDT: {asset_class: crypto, sector: store_of_value}
    rules:
      - rule: kill_switch
      - rule: daily_loss
        limit_pct: 0.03

Rule modules register their config classes with `@register_rule`; `engine.rules` imports every
rule module, so loading a profile knows all of them. `RiskProfile.build()` makes fresh rule
objects (rules keep state, so every PortfolioRisk builds its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
)

from engine.rules.base import RiskRule

PROFILE_DIR = Path(__file__).resolve().parent.parent.parent / "configs" / "risk"


class RuleConfig(BaseModel):
    """Parameters of one rule; subclasses set `rule` to a Literal and implement `build`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rule: str
    needs_assets: ClassVar[bool] = False

    def build(self, profile: RiskProfile) -> RiskRule:
        raise NotImplementedError(f"rule {self.rule!r} has no build()")


RULE_CONFIGS: dict[str, type[RuleConfig]] = {}
_C = TypeVar("_C", bound=RuleConfig)


def register_rule(config_class: type[_C]) -> type[_C]:
    """Make a rule available to profiles under the name its `rule` field defaults to."""
    fields: dict[str, Any] = dict(config_class.__pydantic_fields__)
    name = fields["rule"].default
    if not isinstance(name, str) or not name:
        raise TypeError(f"{config_class.__name__}.rule needs a default name")
    if name in RULE_CONFIGS and RULE_CONFIGS[name] is not config_class:
        raise TypeError(f"rule {name!r} registered twice")
    RULE_CONFIGS[name] = config_class
    return config_class


class AssetInfo(BaseModel):
    """How a symbol is classified for allocation and correlation rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    asset_class: str = "crypto"  # crypto, forex, equity...
    sector: str = "other"
    tags: tuple[str, ...] = ()  # e.g. "meme"


class RiskProfile(BaseModel):
    """A named, ordered set of configured rules and the asset map they classify symbols with."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    description: str = ""
    default_stop_pct: float = Field(
        0.02, gt=0, le=1, description="stop distance assumed when an intent has none"
    )
    default_asset: AssetInfo = Field(default_factory=AssetInfo)
    assets: dict[str, AssetInfo] = Field(default_factory=dict)
    rules: tuple[SerializeAsAny[RuleConfig], ...]

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> tuple[RuleConfig, ...]:
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("must be a non-empty list of rules")
        import engine.rules  # noqa: F401  (registers every rule module)

        parsed: list[RuleConfig] = []
        for index, entry in enumerate(value):
            if isinstance(entry, RuleConfig):
                parsed.append(entry)
                continue
            if not isinstance(entry, dict) or "rule" not in entry:
                raise ValueError(f"entry {index} must be a mapping with a `rule` key")
            name = entry["rule"]
            config_class = RULE_CONFIGS.get(name)
            if config_class is None:
                raise ValueError(f"entry {index}: unknown rule {name!r}; known: "
                                 f"{', '.join(sorted(RULE_CONFIGS))}")
            try:
                parsed.append(config_class.model_validate(entry))
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
                    for item in error.errors())
                raise ValueError(f"entry {index} ({name}): {problems}") from None
        names = [config.rule for config in parsed]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rules listed twice: {', '.join(duplicates)}")
        return tuple(parsed)

    def asset(self, symbol: str) -> AssetInfo:
        return self.assets.get(symbol, self.default_asset)

    def build(self) -> list[RiskRule]:
        """Fresh rule objects, in stage order (gates, sizers, limits), profile order within."""
        rules = [config.build(self) for config in self.rules]
        order = {"gate": 0, "size": 1, "limit": 2}
        return sorted(rules, key=lambda rule: order[rule.stage])  # stable: keeps profile order

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(config.rule for config in self.rules)


def profile_path(name_or_path: str) -> Path:
    """`configs/risk/<name>.yaml` for a bare name, else the path as given."""
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        return PROFILE_DIR / f"{name_or_path}.yaml"
    return Path(name_or_path)


def load_profile(name_or_path: str) -> RiskProfile:
    """Load and validate a risk profile; errors name the file, the rule entry and the key."""
    path = profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ValueError(f"cannot read risk profile {path}: {error.strerror} "
                         f"(bundled profiles: {known})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"risk profile {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"risk profile {path}: top level must be a mapping")
    try:
        return RiskProfile.model_validate(data)
    except ValidationError as error:
        lines = [f"invalid risk profile {path}:"]
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"]) or "<top level>"
            lines.append(f"  {key}: {item['msg']}")
        raise ValueError("\n".join(lines)) from None
