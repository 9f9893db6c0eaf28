"""Reusing the conformance suite (tests/test_conformance.py) for another deployment: its tests
copied into the deployment's test module, which defines its own `stack` fixture.
"""

import functools

import pytest


def reuse(namespace: dict, limits: dict = None):
    """Puts every `test_*` of test_conformance into `namespace` (a module's globals()). A test
    that `limits` ({stack kind: {test name: reason}}) names for a stack's kind is skipped there
    with that reason: what a front end cannot do is said, never silently left out."""
    import test_conformance as suite
    limits = limits or {}
    for name in dir(suite):
        if name.startswith("test_"):
            namespace[name] = _limited(getattr(suite, name), limits)


def _limited(test, limits):
    """`test`, skipped (with the reason) on the stacks `limits` names for it. wraps() keeps its
    signature (fixtures, parameters) and its marks for pytest."""
    if not any(test.__name__ in by_test for by_test in limits.values()):
        return test

    @functools.wraps(test)
    def run(stack, *args, **kw):
        reason = limits.get(stack.kind, {}).get(test.__name__)
        if reason:
            pytest.skip(reason)
        return test(stack, *args, **kw)
    return run
