"""``python -m dlcli`` runs the same command line as the ``dlcli`` console script."""

from dlcli.cli import main

if __name__ == "__main__":
    main()
