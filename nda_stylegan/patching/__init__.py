"""``nda-stylegan patch``: give a host fork's train.py the small hook that loads trainer plugins.

``hooks/`` holds the hook text per supported host (the only copy; the repository's ``patches/``
points here); ``hosts`` recognises the fork, ``hookfile`` reads a hook, ``edit`` inserts and
removes it as pure text operations and ``command`` is the CLI (files, backup, atomic writes).
"""


class PatchError(ValueError):
    """A fork that cannot be patched (or reverted); the message is one line naming the fix."""
