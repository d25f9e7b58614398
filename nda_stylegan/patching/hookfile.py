"""Read a hook file (``hooks/<host>.hook``): a list of insertions, each placed next to one anchor.

Format: ``##`` lines before the first header are comments. A section is a header
``@@ before: <what the anchor is>`` or ``@@ after: ...``, then ``@@ anchor: <regex>`` (matched
against each line of train.py, without its line ending, with ``re.match``), then the lines to
insert, indented like the anchor line.
"""

import os
import re

HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hooks")
TAG = "stylegan.trainer_plugins hook"  # every inserted line carries it or lies between its markers
BLOCK_BEGIN = "# >>> " + TAG
BLOCK_END = "# <<< " + TAG

_HEADER = re.compile(r"@@ (before|after): (.+)\Z")
_ANCHOR = re.compile(r"@@ anchor: (.+)\Z")


class Insertion(object):
    def __init__(self, where, what, anchor, lines):
        self.where = where  # "before" or "after"
        self.what = what  # the anchor in words, for error messages
        self.anchor = anchor  # compiled regex
        self.lines = lines  # text lines without line endings


def hook_path(host):
    return os.path.join(HOOK_DIR, host + ".hook")


def read_hook(host):
    """The insertions of ``host``'s hook file."""
    with open(hook_path(host), "r", encoding="utf-8") as f:
        raw = f.read().split("\n")
    if raw and raw[-1] == "":
        raw.pop()  # the file's final newline
    insertions, i = [], 0
    while i < len(raw) and raw[i].startswith("##"):
        i += 1
    while i < len(raw):
        header = _HEADER.match(raw[i])
        anchor = _ANCHOR.match(raw[i + 1]) if i + 1 < len(raw) else None
        if not header or not anchor:
            raise ValueError("%s line %d: expected '@@ before|after: ...' then '@@ anchor: REGEX'" % (hook_path(host), i + 1))
        j = i + 2
        while j < len(raw) and not raw[j].startswith("@@ "):
            j += 1
        insertions.append(Insertion(header.group(1), header.group(2), re.compile(anchor.group(1)), raw[i + 2:j]))
        i = j
    return insertions
