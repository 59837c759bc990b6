"""Figure functions of the course, one or more modules per chapter.

Each module registers small functions with `block4.figures.registry.figure`. The
pipeline (`block4.pipeline`) finds them by reading the modules' source, so listing and
freshness checks never import torch or Lightning; a module is imported only to run a figure.
"""
