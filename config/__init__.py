"""refocusd configuration: validated pydantic models, TOML + ``REFOCUSD_...`` environment."""

from refocusd.config.loader import ConfigError, Settings, example_text, load_settings

__all__ = ["ConfigError", "Settings", "example_text", "load_settings"]
