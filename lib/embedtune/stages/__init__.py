"""One module per stage notebook; each has a ``run(ctx)`` that the notebook calls."""
