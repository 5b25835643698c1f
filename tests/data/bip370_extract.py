#!/usr/bin/env python3
"""Extracts the "Test Vectors" section of BIP-0370 into bip370_test_vectors.json.

Usage: bip370_extract.py path/to/bip-0370.mediawiki > bip370_test_vectors.json

Each vector keeps the BIP's own words: its "Case:" line, the hex and base64 strings (checked
to be the same bytes), the line of the hex string in the BIP, and the verdict of the section
it stands in: "invalid", "valid", "lock_time" (with the lock time the BIP says) or
"lock_time_undetermined".
"""
import base64
import json
import re
import sys

path = sys.argv[1]
lines = open(path, encoding="utf-8").read().split("\n")
start = lines.index("==Test Vectors==")
end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("==") and not lines[i].startswith("==="))

verdict, lock_time, case, vectors, pending = None, None, None, [], None
for i in range(start, end):
    line = lines[i]
    if line.startswith("The following are invalid PSBTs"):
        verdict, lock_time = "invalid", None
    elif line.startswith("The following are valid PSBTs"):
        verdict, lock_time = "valid", None
    elif (m := re.match(r"The timelock for the following PSBTs should be computed to be (\d+):", line)):
        verdict, lock_time = "lock_time", int(m.group(1))
    elif line.startswith("The timelock for the following PSBTs cannot be computed"):
        verdict, lock_time = "lock_time_undetermined", None
    elif line.startswith("* Case:"):
        case = line[len("* Case:"):].strip()
    elif line.lower().startswith("** bytes in hex:"):
        hexstr = re.search(r"<pre><?([0-9a-fA-F]+)</pre>", line).group(1)
        pending = {"line": i + 1, "verdict": verdict, "lock_time": lock_time,
                   "case": case if case is not None else "(no case line in the BIP)",
                   "hex": hexstr.lower()}
        case = None
    elif line.startswith("** Base64 String:"):
        b64 = re.search(r"<pre>([A-Za-z0-9+/=]+)</pre>", line).group(1)
        assert base64.b64decode(b64) == bytes.fromhex(pending["hex"]), pending["line"]
        pending["base64"] = b64
        vectors.append(pending)
        pending = None

json.dump({
    "_source": "bitcoin/bips bip-0370.mediawiki, section \"Test Vectors\" (snapshot "
               "7fe0b034ec967b52a5a28276419117326df93263), extracted by tests/data/bip370_extract.py; "
               "\"line\" is the line of the hex string in that file. Licence: BIP-370 header, "
               "BSD-2-Clause.",
    "vectors": vectors,
}, sys.stdout, indent=1)
sys.stdout.write("\n")
