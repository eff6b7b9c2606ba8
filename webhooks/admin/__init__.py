"""The admin side of webhooks: delivery logs, single and bulk replays (audited), retention, the console."""
