"""embedtune: should I fine-tune my embedding model for my domain, and how do I keep it working?"""

__version__ = "0.1.0"
