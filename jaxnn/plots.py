"""Moved in jaxnn 0.3: the experiments' figures live beside the scripts, in `jaxnn_lab.plots`."""

raise ImportError(
    "jaxnn.plots was removed in jaxnn 0.3: the experiments' figures are jaxnn_lab.plots, the lab "
    "installed with the repository (pip install -e .)"
)
