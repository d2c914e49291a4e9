"""aecli: train and use autoencoders from the shell.

Only the version lives here so that ``import aecli`` (and ``aecli --help``)
stays light: torch, numpy and safetensors are imported by the modules that
need them, when a command needs them.
"""

__version__ = "0.1.0"
