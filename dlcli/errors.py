"""Errors that the command line turns into one clear line and a non-zero exit code.

Core code raises these; only ``dlcli.cli`` decides how they are shown. ``UsageError`` (exit 2) is for input
the user can fix by changing the command or the recipe; ``DlcliError`` (exit 1) is for everything else that
is expected to go wrong (missing data, a corrupt checkpoint, a device that is not there).
"""


class DlcliError(Exception):
    """An expected failure, shown as one line. ``exit_code`` is what the process returns."""

    exit_code = 1


class UsageError(DlcliError):
    """Bad input on the command line or in a recipe file."""

    exit_code = 2


class ConfigError(UsageError):
    """A recipe or override that does not validate; the message names the file and the key."""


class PeerStopped(DlcliError):
    """This rank of a torchrun group stops because another rank failed, which reports why. It exits 0, so that
    torchrun names the reporting rank as the cause (and does not stop it before it has said why)."""

    exit_code = 0
