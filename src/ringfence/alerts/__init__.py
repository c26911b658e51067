"""Alerts: the model, deterministic ids, decisions and lifecycle."""

from ringfence.alerts.model import Action, Alert, Decision, HistoryEntry, alert_id

__all__ = ["Action", "Alert", "Decision", "HistoryEntry", "alert_id"]
