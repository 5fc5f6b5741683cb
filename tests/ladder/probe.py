#!/usr/bin/env python3
"""The second Python of rungs 6 to 8's checks (part_two_primitives.py): it imports the
learner's tinyvpn.py and calls its functions, so that an endless loop or a crash cannot take
the checker down. The calls come on stdin, as a JSON list of [function, arguments...] (bytes as
{"hex": ...}); each answer goes out on a line of JSON. Standard library only, and nothing of
the checker's but the base point.

    python3 tests/ladder/probe.py PROGRAM < CALLS
"""

import importlib.util
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from reference_crypto import NINE


def probe(program: str) -> None:
    """The second Python: import `program`, make the calls read from stdin (a JSON list of
    [function, arguments...]; bytes as {"hex": ...}) and answer each on a line of stdout."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the learner's code prints goes to stderr, never among the answers
    # An X25519 that never reduces modulo p doubles its numbers at every step: a MemoryError
    # here, not the machine's memory gone.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    calls = json.load(sys.stdin)
    try:
        spec = importlib.util.spec_from_file_location("tinyvpn_under_test", program)
        module = importlib.util.module_from_spec(spec)
        sys.modules["tinyvpn_under_test"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException as error:  # a SyntaxError, an exception, even sys.exit() at import
        print(json.dumps({"crash": raised(error, program)}), file=answers, flush=True)
        return
    print(json.dumps({"imported": True}), file=answers, flush=True)
    for name, *arguments in calls:
        values = [bytes.fromhex(a["hex"]) if isinstance(a, dict) else a for a in arguments]
        print(json.dumps(make_call(module, program, name, values)), file=answers, flush=True)


MEMORY = 2 * 1024**3  # bytes the learner's calls may use


def make_call(module: Any, program: str, name: str, values: list) -> dict:
    function = getattr(module, name, None)
    if not callable(function):
        return {"missing": name}
    try:
        if name == "x25519" and len(values) == 1:  # RFC 7748 5.2: k, u = x25519(k, u), k
            k = u = NINE
            for _ in range(values[0]):
                k, u = function(k, u), k
                if not isinstance(k, (bytes, bytearray)):
                    break
            result = k
        else:
            result = function(*values)
    except BaseException as error:  # noqa: B036 (sys.exit() in a function is a crash too)
        return {"error": raised(error, program)}
    if result is None:
        return {"none": True}
    if isinstance(result, (bytes, bytearray)):
        return {"hex": bytes(result).hex()}
    return {"type": type(result).__name__}


def raised(error: BaseException, program: str) -> str:
    """The error, and where in `program` it happened: 'ZeroDivisionError: ... (tinyvpn.py:12)'."""
    name = Path(program).name
    if isinstance(error, SyntaxError):
        return f"{type(error).__name__}: {error.msg} ({name}:{error.lineno})"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if Path(frame.filename).resolve() == Path(program).resolve()]
    where = f" ({name}:{lines[-1]})" if lines else ""
    return f"{type(error).__name__}: {error}{where}"



if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("probe: part of tests/ladder/check.py: run python3 tests/ladder/check.py 8")
    probe(sys.argv[1])
