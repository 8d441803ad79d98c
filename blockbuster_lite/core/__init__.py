"""The engine: loop check, settings, policy, targets, patcher, hot path, actions, guards, reports.

Imports nothing from the rest of the package; the layers above plug in through ``extensions``
(offload, watchdog, env hooks) and ``state.observers`` (violation subscribers).
"""
