"""Thin entrypoints for `ray job submit` and cron: each forwards to the lrstream CLI."""
