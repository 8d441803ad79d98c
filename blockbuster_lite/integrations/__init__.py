"""Where users meet the sanitizer: ASGI middleware, pytest plugin, start-up hook, runner, OTel,
exit summary. Imports core, and offload or the watchdog where a feature needs them."""
