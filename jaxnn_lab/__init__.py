"""jaxnn's lab: the application that lives beside the library.

The library (`jaxnn`) holds what a researcher imports. The lab holds what the scripts in
experiments/ and benchmarks/ share: the command line's plumbing (`cli`), its model registry and
the experiments' training call (`zoo`), the main job's flags (`flags`) and recipes (`recipes`),
the launcher of multi-process runs (`launcher`), the figures (`plots`) and the benchmarks' timing
and result files (`bench`). It is installed with the repository (`pip install -e .`) and imported
by name; nothing in `jaxnn` imports it.
"""
