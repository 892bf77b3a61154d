"""A plugin module that fails on import, as a badly packaged plugin might."""

raise RuntimeError("plugin needs a library that is not installed")
