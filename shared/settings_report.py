"""What a service's `/health` says about its own configuration: whether changes need the
API token, and every setting that differs from its default (secrets masked), so that
`ibflow doctor` can show how each running service was really configured."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from shared.health import ComponentHealth


def masked(value: Any) -> str:
    """A setting's value safe to show: a secret is `***`, unless it is a URL, whose
    password alone is masked (a database URL says where, not how to get in)."""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        parts = urlsplit(secret)
        if parts.scheme and parts.netloc:
            if parts.password is None:
                return secret
            host = parts.netloc.rpartition("@")[2]
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        return "***"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ",".join(f"{k}={'never' if v is None else v}" for k, v in value.items())
    return str(value)


def non_default_settings(settings: BaseSettings) -> dict[str, str]:
    """Environment variable name -> masked value, for every setting not at its default."""
    differing = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if field.is_required():
            differing[name.upper()] = masked(value)
            continue
        default = field.get_default(call_default_factory=True)
        if value != default:
            differing[name.upper()] = masked(value)
    return dict(sorted(differing.items()))


def settings_component(settings: BaseSettings) -> ComponentHealth:
    token = getattr(settings, "ibflow_api_token", None)
    return ComponentHealth(status="ok", detail={
        "auth": "on" if token is not None and token.get_secret_value() else "off",
        "non_default": non_default_settings(settings),
    })
