"""Micro-Manager through pycromanager: run mode (refocusd runs the plan) and follow mode."""

from refocusd.drivers.micromanager.plan import RETRY_AXIS, PlanError, PlanStep, load_sequence, plan_steps
from refocusd.drivers.micromanager.session import CoreCallFailed, CoreSession, MicroManagerUnavailable

__all__ = [
    "RETRY_AXIS",
    "CoreCallFailed",
    "CoreSession",
    "MicroManagerUnavailable",
    "PlanError",
    "PlanStep",
    "load_sequence",
    "plan_steps",
]
