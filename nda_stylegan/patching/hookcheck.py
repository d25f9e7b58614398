"""Is a trainer-plugin hook already in a train.py complete? (ours, or one added by hand)

A hook works only when the running script reaches all three calls of the plugin protocol
(docs/contracts.md section 3): ``click_options()`` (the options appear), ``option_names()`` (their
values are taken out of main's keyword arguments; without it the host fails with "unexpected
keyword argument 'nda'") and ``rewrite_config()``. A call counts when it is reachable: in
module-level code, or in a top-level function that reachable code calls by name (so a helper that
is defined but never called, or called but never defined, does not count).
"""

import ast

PROTOCOL = (
    ("click_options", "adds the plugins' options to main (click_options())"),
    ("option_names", "takes the plugins' option values out of main's keyword arguments (option_names()), "
                     "so the host would fail with \"unexpected keyword argument 'nda'\""),
    ("rewrite_config", "lets the plugins rewrite the training config (rewrite_config())"),
)


def _called_names(nodes):
    """Names of plain calls ``f(...)`` and of method calls ``x.f(...)`` anywhere under ``nodes``."""
    plain, methods = set(), set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                if isinstance(sub.func, ast.Name):
                    plain.add(sub.func.id)
                elif isinstance(sub.func, ast.Attribute):
                    methods.add(sub.func.attr)
    return plain, methods


def _reachable_methods(tree):
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    # Module-level code, plus decorators (click's decorators run at import time).
    todo = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    todo += [d for node in functions.values() for d in node.decorator_list]
    plain, methods = _called_names(todo)
    seen = set()
    pending = [name for name in plain if name in functions]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        more_plain, more_methods = _called_names(functions[name].body)
        methods |= more_methods
        pending += [n for n in more_plain if n in functions and n not in seen]
    return methods


def missing_hook_calls(text):
    """What a train.py's plugin hook fails to do, as phrases (empty when complete, or when the
    file does not parse: then the fork cannot run anyway and Python says why)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    methods = _reachable_methods(tree)
    return [what for name, what in PROTOCOL if name not in methods]
