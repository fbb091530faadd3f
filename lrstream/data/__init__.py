"""The data plane: the Store (one root, every path of the layout), sources, shards, reader, selections, sketch versions, checkpoints, reports, datasets.

It knows nothing of training or Ray; sketches cross it only as the plain
arrays of :mod:`lrstream.numerics.sketch`.
"""
