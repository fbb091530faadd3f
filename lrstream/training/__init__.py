"""Training: the configuration, the one training core (workers, server, loop), ``learn``, the published baselines, ``plan``.

It builds on :mod:`lrstream.numerics` only; the Ray retrain in
:mod:`lrstream.distributed` runs the same core with actors.
"""
