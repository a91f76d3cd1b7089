"""Training loops, one per kind of learning; importing this package registers them all."""

from importlib import import_module

for _name in ("perceptron", "regress", "classify"):
    try:
        import_module(f"dlcli.tasks.{_name}")
    except ModuleNotFoundError as e:
        if e.name != f"dlcli.tasks.{_name}":
            raise
