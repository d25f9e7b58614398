"""``nda-stylegan list``: every available negative with its parameters and defaults."""

import click


@click.command("list")
def list_command():
    """List the available negatives (built-in and from installed packages) with their
    parameters, defaults and allowed values, in the syntax that --nda takes."""
    from .negatives.registry import available_negatives, get_negative_class

    for i, name in enumerate(available_negatives()):
        if i:
            click.echo("")
        click.echo(get_negative_class(name).describe())
    click.echo("\nSpec syntax: --nda=jigsaw,stitch  or  --nda='jigsaw(k=4):3,cutout(size=0.25):1'")
