"""What every command needs: the configuration, read once with a clear refusal, and a Ray
driver connected to the running cluster in Botmain's namespace."""

from __future__ import annotations

import click

from cluster.config import BotmainConfig, ConfigError, load_config


def command_config() -> BotmainConfig:
    """configs/*.yaml (or $BOTMAIN_CONFIG_DIR) and the BOTMAIN_* secrets; an error names what is wrong."""
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None


def connect_ray(config: BotmainConfig) -> None:
    """Join the running cluster as a driver in Botmain's namespace."""
    from actors import names
    from cluster import runtime

    ends = runtime.endpoints(config.cluster)
    if not runtime.dashboard_alive(ends.dashboard_url):
        raise click.ClickException(f"no Ray cluster answers at {ends.dashboard_url} (botmain up)")
    runtime.enable_token_auth(create=False)  # before Ray is imported: it reads the mode once
    import ray

    if not ray.is_initialized():
        ray.init(address=ends.gcs_address, namespace=names.NAMESPACE, log_to_driver=False, logging_level="ERROR")
