"""`sandboxer-bench e2b`: N create+kill pairs through the official E2B SDK.

Prints one JSON list: each pair's milliseconds, from the call to
`Sandbox.create` to the return of `kill` (E2B_API_URL, E2B_API_KEY and
E2B_DOMAIN point the SDK at `sandboxer serve`).
"""

import json
import sys
import time

from e2b import Sandbox

n = int(sys.argv[1])
out = []
for _ in range(n):
    t = time.perf_counter()
    s = Sandbox.create(template="canary")
    if not s.kill():
        raise SystemExit("kill answered False")
    out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
