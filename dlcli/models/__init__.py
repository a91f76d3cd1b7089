"""Model architectures, one per file; importing this package registers them all."""

from importlib import import_module

# Each module registers its builders with ``@register_model``. Listed explicitly so that the set of
# built-in models is visible in one place.
for _name in ("mlp", "lenet", "alexnet", "resnet"):
    try:
        import_module(f"dlcli.models.{_name}")
    except ModuleNotFoundError as e:  # a module not written yet; only tolerated for our own names
        if e.name != f"dlcli.models.{_name}":
            raise
