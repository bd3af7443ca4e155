"""How a workflow's published signals turned out: the scoring arithmetic and the reader
of the stored signals it scores."""
