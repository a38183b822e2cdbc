"""wikihash: reverse image search over the images of a MediaWiki.

See docs/architecture.md for how the modules fit together.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
