"""User code named in the config by import path: `package.module:name`."""

import importlib


def import_object(path: str):
    """The object `path` (`package.module:name`) names; a ValueError naming it when it cannot be imported."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path of the form package.module:name")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{path!r} cannot be imported: {err}") from err
