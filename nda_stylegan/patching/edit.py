"""The hook as pure text operations on train.py: insert, detect, strip, diff."""

import difflib
import re

from . import PatchError
from .hookfile import BLOCK_BEGIN, BLOCK_END, TAG

_LINE_END = re.compile(r"(\r\n|\r|\n)\Z")


def split_lines(text):
    """``[(body, ending)]`` of each line; ``ending`` is ``""`` on a last line without one."""
    out = []
    for line in text.splitlines(True):
        m = _LINE_END.search(line)
        out.append((line[:m.start()], m.group()) if m else (line, ""))
    return out


def newline_of(text):
    return "\r\n" if "\r\n" in text else "\n"


def is_patched(text):
    return TAG in text


def find_anchor(lines, insertion, host):
    hits = [i for i, (body, _) in enumerate(lines) if insertion.anchor.match(body)]
    if len(hits) != 1:
        problem = "has no line matching" if not hits else "has %d lines matching" % len(hits)
        raise PatchError("train.py %s the %s hook's anchor (%s: /%s/); it was edited too far to patch "
                         "automatically: add the hook by hand (see docs/fork.md)"
                         % (problem, host, insertion.what, insertion.anchor.pattern))
    return hits[0]


def apply_hook(text, insertions, host):
    """``text`` with every insertion placed at its anchor (PatchError when an anchor is missing
    or ambiguous); inserted lines use the file's own line ending and the anchor's indentation."""
    lines = split_lines(text)
    newline = newline_of(text)
    placed = []
    for order, ins in enumerate(insertions):
        index = find_anchor(lines, ins, host)
        indent = re.match(r"[ \t]*", lines[index][0]).group()
        new = [((indent + line) if line.strip() else "", newline) for line in ins.lines]
        placed.append((index + (1 if ins.where == "after" else 0), order, new))
    if lines and lines[-1][1] == "" and any(pos == len(lines) for pos, _, _ in placed):
        lines[-1] = (lines[-1][0], newline)  # appending after a last line without a newline
    # Bottom-up, so earlier positions stay valid; at one position, file order of the hook.
    for pos, _, new in sorted(placed, key=lambda p: (p[0], p[1]), reverse=True):
        lines[pos:pos] = new
    return "".join(body + end for body, end in lines)


def strip_hook(text):
    """``text`` without the hook: tagged lines and the marked block (with the blank line the hook
    puts after it). Used to revert a file edited after patching; otherwise the backup is exact."""
    lines = split_lines(text)
    out, i = [], 0
    while i < len(lines):
        body = lines[i][0]
        if body.strip().startswith(BLOCK_BEGIN):
            j = i
            while j < len(lines) and not lines[j][0].strip().startswith(BLOCK_END):
                j += 1
            i = j + 1
            if i < len(lines) and not lines[i][0].strip():
                i += 1
            continue
        if body.rstrip().endswith("# " + TAG):
            i += 1
            continue
        out.append(lines[i])
        i += 1
    return "".join(body + end for body, end in out)


def unified_diff(old, new, name="train.py"):
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        fromfile="a/" + name, tofile="b/" + name))
