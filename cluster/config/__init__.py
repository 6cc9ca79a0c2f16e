"""Configuration: YAML files in ``configs/`` validated by pydantic; secrets from the environment."""

from cluster.config.loader import BotmainConfig, ConfigError, load_config, load_file
from cluster.config.secrets import mask_dsn, read_secret

__all__ = ["BotmainConfig", "ConfigError", "load_config", "load_file", "mask_dsn", "read_secret"]
