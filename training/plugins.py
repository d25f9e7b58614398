"""Trainer plugins for our train.py, discovered through the ``stylegan.trainer_plugins`` entry points.

A plugin (docs/contracts.md section 3) has ``name``, ``click_options()``, ``option_names()`` and
``rewrite_config(config, options) -> str | None``. This module finds them, appends their options
to a click command, splits their values out of the command's keyword arguments, and lets each
rewrite the training config, collecting the texts that go into the run folder's name.
"""

import warnings

import click

ENTRY_POINT_GROUP = "stylegan.trainer_plugins"


def _entry_points(group):
    """Entry points of ``group``; importlib.metadata's API differs before Python 3.10."""
    from importlib import metadata

    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        found = list(eps.select(group=group))
    else:  # Python 3.8 / 3.9: a dict of group -> list
        found = list(eps.get(group, []))
    # An editable install can expose the same distribution twice (egg-info + site-packages).
    unique = {}
    for ep in found:
        unique.setdefault((ep.name, ep.value), ep)
    return sorted(unique.values(), key=lambda ep: ep.name)


def discover_plugins(group=ENTRY_POINT_GROUP):
    """Load every plugin of ``group``. A plugin that fails to load is skipped with a warning, so
    that a broken third-party package does not stop plain training."""
    plugins = []
    for ep in _entry_points(group):
        try:
            plugin = ep.load()
        except Exception as exc:  # any import failure of someone else's package
            warnings.warn("trainer plugin %r (%s) could not be loaded and is ignored: %s: %s"
                          % (ep.name, ep.value, type(exc).__name__, exc))
            continue
        missing = [a for a in ("name", "click_options", "option_names", "rewrite_config") if not hasattr(plugin, a)]
        if missing:
            warnings.warn("trainer plugin %r (%s) lacks %s and is ignored" % (ep.name, ep.value, ", ".join(missing)))
            continue
        plugins.append(plugin)
    return plugins


def add_plugin_options(command, plugins):
    """Append each plugin's click options to ``command``; a name clash is a programming error."""
    taken = {p.name for p in command.params}
    taken_flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for plugin in plugins:
        for option in plugin.click_options():
            if option.name in taken or set(option.opts) & taken_flags:
                raise RuntimeError("trainer plugin %r adds option %s, which train.py already has"
                                   % (plugin.name, "/".join(option.opts)))
            taken.add(option.name)
            taken_flags.update(option.opts)
            command.params.append(option)
    return command


def pop_plugin_options(kwargs, plugins):
    """Remove the plugins' values from ``kwargs``; return ``{plugin name: {option: value}}``."""
    values = {}
    for plugin in plugins:
        values[plugin.name] = {name: kwargs.pop(name) for name in plugin.option_names() if name in kwargs}
    return values


def apply_plugins(config, plugins, values):
    """Let every plugin rewrite ``config``; return the non-empty run-name texts in order.

    A plugin's ValueError / click.UsageError (bad option values) becomes a click.UsageError.
    """
    texts = []
    for plugin in plugins:
        try:
            text = plugin.rewrite_config(config, values.get(plugin.name, {}))
        except click.UsageError:
            raise
        except ValueError as exc:
            raise click.UsageError(str(exc))
        if text:
            texts.append(str(text))
    return texts

