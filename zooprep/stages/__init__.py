"""The stages, one module each; the functions are re-exported by ``zooprep``."""
