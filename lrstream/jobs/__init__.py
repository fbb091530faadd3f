"""The stages users run (ingest, train, plan, evaluate, report, factorize, demo), thin over the packages below.

Each job takes plain values or a small frozen config, builds one
:class:`~lrstream.data.store.Store` and passes it down, logs through a
``log`` callable and returns a JSON-ready dict; a failure that still has a
result raises :class:`~lrstream.errors.CommandFailed`. ``lrstream.cli``
parses flags into these calls.
"""
