"""How a setting is declared: its name, default, parser and meaning, and the common parsers.

``kasparro.config`` holds the list and reads the environment; the sources declare their own
settings with these types, so this module imports nothing of the project.
"""

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ValueOf = Callable[[str], Any]
Networks = tuple[IPv4Network | IPv6Network, ...]


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default, how its text is read, and what it means."""

    name: str
    # The value when the variable is unset or blank; a function computes it from other settings
    # (it gets ``value_of(name)``), and then ``default_text`` says what it is in words.
    default: Any
    meaning: str
    # Turns the variable's text into the value; a ValueError's message says what was expected.
    parse: Callable[[str], Any] = str
    secret: bool = False  # the whole value is a secret: it has no default and is never logged
    secret_parts: Callable[[Any], Iterable[str]] | None = None  # the secrets inside a value
    key: str = ""  # the app's config key, when it is not the variable's name
    default_text: str = ""

    def __post_init__(self):
        if self.secret and self.default != "":
            raise ValueError(f"{self.name} is a secret: it must have no default")
        if callable(self.default) and not self.default_text:
            raise ValueError(f"{self.name}: a computed default needs default_text")

    @property
    def config_key(self) -> str:
        """Return the app's config key for this setting."""
        return self.key or self.name

    @property
    def holds_secret(self) -> bool:
        """Return whether a value of this setting is, or may contain, a secret."""
        return self.secret or self.secret_parts is not None

    def read(self, environ: Mapping[str, str], value_of: ValueOf) -> Any:
        """Return this setting's value in ``environ``; unset or blank means the default."""
        raw = environ.get(self.name, "").strip()
        if not raw:
            return self.default(value_of) if callable(self.default) else self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            # A value that may hold a secret is never repeated in an error.
            given = "" if self.holds_secret else f", got {raw!r}"
            raise ValueError(f"{self.name} {exc}{given}") from None

    def secrets_in(self, value: Any) -> list[str]:
        """Return the secrets ``value`` holds (for the log scrubber)."""
        if self.secret_parts is not None:
            return list(self.secret_parts(value or ""))
        return [value] if self.secret and value else []


def whole_number(raw: str) -> int:
    """Parse a whole number."""
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


def number(raw: str) -> float:
    """Parse a number."""
    try:
        return float(raw)
    except ValueError:
        raise ValueError("must be a number") from None


def one_of(*choices: str) -> Callable[[str], str]:
    """Return a parser that accepts one of ``choices``, in any case."""

    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            named = [f"`{choice}`" if choice else "empty" for choice in choices]
            raise ValueError(f"must be {' or '.join(named)}")
        return value

    return parse


def at_least(minimum: int) -> Callable[[str], int]:
    """Return a parser of whole numbers that raises smaller ones to ``minimum``."""

    def parse(raw: str) -> int:
        return max(minimum, whole_number(raw))

    return parse


@functools.lru_cache(maxsize=8)
def allowed_networks(listed: str) -> Networks:
    """Parse a comma-separated list of addresses and networks (``10.0.0.0/8``, ``fd00::1``)."""
    networks = []
    for entry in filter(None, (part.strip() for part in listed.split(","))):
        try:
            networks.append(ip_network(entry))  # strict: 10.0.0.1/8 is a typo, not a network
        except ValueError:
            raise ValueError(f"must list addresses or networks ({entry!r} is neither)") from None
    return tuple(networks)


def client_in(address: str | None, networks: Networks) -> bool:
    """Return whether the client ``address`` lies in one of ``networks``; unknown: it does not."""
    try:
        client = ip_address(address or "")
    except ValueError:
        return False
    if client.version == 6 and client.ipv4_mapped is not None:  # IPv4 on a dual-stack socket
        client = client.ipv4_mapped
    return any(client in network for network in networks)


def network_list(raw: str) -> str:
    """Check ``raw`` lists addresses or networks, and keep it as written (a setting's parser)."""
    allowed_networks(raw)
    return raw


def url_password(url: str) -> list[str]:
    """Return the password in ``url``, if it has one."""
    try:
        password = make_url(url).password if url else None
    except Exception:  # an unparsable URL fails later with its own clear error
        password = None
    return [password] if password else []


def project_path(*parts: str) -> str:
    """Return the path of a file bundled with the project."""
    return str(PROJECT_ROOT.joinpath(*parts))


def schedule_setting(source: str) -> str:
    """Return the setting that holds ``source``'s beat interval."""
    return f"SCHEDULE_{source.upper()}_SECONDS"


def raw_retention_setting(source: str) -> str:
    """Return the setting that holds ``source``'s raw retention age in days."""
    return f"RETENTION_RAW_DAYS_{source.upper()}"


def source_run_settings(
    source: str, *, schedule_seconds: int = 600, raw_retention_days: int = 0
) -> tuple[Setting, Setting]:
    """Return the settings every source has: its beat interval and its raw rows' retention."""
    return (
        Setting(
            schedule_setting(source),
            schedule_seconds,
            f"seconds between two scheduled runs of `{source}`",
            whole_number,
        ),
        Setting(
            raw_retention_setting(source),
            raw_retention_days,
            f"age in days after which `{source}`'s raw rows, once transformed, go; 0 keeps them",
            whole_number,
        ),
    )
