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


def _register():
    for module_name, attr in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module: surface it
                raise
            continue
        main.add_command(getattr(module, attr))


_register()

if __name__ == "__main__":
    main()
