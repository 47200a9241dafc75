"""Running as a service: supervision, health, metrics, notify, reload, logging and log view."""
