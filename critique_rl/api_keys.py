"""API keys come from environment variables named in the config, never from the config itself."""

from __future__ import annotations

import os

from critique_rl.config import ConfigError


def read_api_key(env: str, config_key: str, what: str) -> str:
    """The key in ``$env``; '' when ``env`` is empty (an endpoint without authentication).

    A named but unset variable is an error naming ``config_key`` (the config field holding the
    variable's name) and ``what`` the key is for.
    """
    if not env:
        return ""
    key = os.environ.get(env, "")
    if not key:
        raise ConfigError(f"{config_key}: environment variable ${env} is not set or empty; export {what} there, "
                          f"or set {config_key}: '' for an endpoint without authentication")
    return key
