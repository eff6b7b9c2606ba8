"""The composition root: the one place that imports the domains (sync_trigger, subscriptions, webhooks) and
wires them onto the kernel (the rest of `synchook/`) to build the app, the worker, the models registry and
the migrations. The CLI (`synchook.cli`) belongs to the root too. Nothing outside the root imports it."""
