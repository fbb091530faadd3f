"""The numerics: sketches, SCW, losses, starts, scoring and classic factorisation, in torch only.

Nothing here imports Ray, fsspec, pyarrow or any storage code (a test holds
it), so the math can be read, tested and run on a GPU machine on its own.
"""
