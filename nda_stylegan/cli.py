"""The ``nda-stylegan`` command: a click group whose subcommands live in their own modules."""

import importlib

import click

# (module, attribute) of each subcommand; each module owns one job.
SUBCOMMANDS = (
    ("nda_stylegan.cli_list", "list_command"),
    ("nda_stylegan.cli_preview", "preview_command"),
    ("nda_stylegan.patching.command", "patch_command"),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nda_stylegan")
def main():
    """Negative Data Augmentation for StyleGAN2-ADA-style GANs."""


def add_subcommands(group, subcommands=SUBCOMMANDS):
    """Add each subcommand to ``group``. A module that cannot be imported stops the command with
    an error naming it: a silently missing subcommand would only look like a typo to the user."""
    for module_name, attr in subcommands:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError("nda-stylegan: cannot import %s, the module of a subcommand (%s); the installation "
                              "is incomplete: reinstall nda_stylegan" % (module_name, exc)) from exc
        group.add_command(getattr(module, attr))


add_subcommands(main)

if __name__ == "__main__":
    main()
