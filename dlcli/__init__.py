"""dlcli: the milestone models of deep learning, runnable from one command line."""

__version__ = "0.1.0"
