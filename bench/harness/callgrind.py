"""A small reader for callgrind output files: self cost (Ir) per function and per object.

callgrind_annotate 3.19 attributes everything to `clone` in the parts written by
`callgrind_control --dump` from a multi-threaded process, so bench/profile reads the files
itself. Only what the report needs is parsed: name compression (`fn=(id) name`, later `fn=(id)`),
the current object (`ob=`), self-cost lines, and call lines (whose cost line is inclusive cost
of the callee and is skipped).
"""

import collections
import re

_NAME = re.compile(r"^(c?)(fn|ob)=\((\d+)\)(?: (.*))?$")
_COST = re.compile(r"^(?:[+-]?\d+|\*|0x[0-9a-fA-F]+|[+-]0x[0-9a-fA-F]+) (\d+)")


def self_costs(path):
    """({(object, function): Ir}, {object: Ir}, total Ir) of one callgrind output file."""
    names = {"fn": {}, "ob": {}}
    by_fn = collections.Counter()
    by_ob = collections.Counter()
    ob = fn = None
    skip_next = False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = _NAME.match(line)
            if m:
                called, kind, ident, name = m.groups()
                if name:
                    names[kind][ident] = name
                if not called:
                    if kind == "ob":
                        ob = ident
                    else:
                        fn = ident
                continue
            if line.startswith("calls="):
                skip_next = True
                continue
            m = _COST.match(line)
            if m and fn is not None:
                if skip_next:
                    skip_next = False
                    continue
                cost = int(m.group(1))
                obj = names["ob"].get(ob, "?")
                by_fn[(obj, names["fn"].get(fn, fn))] += cost
                by_ob[obj] += cost
    return by_fn, by_ob, sum(by_ob.values())
