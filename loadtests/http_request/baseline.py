"""The baseline: a plain `requests` loop over the same pages Ferry's step
reads (`GET /records?page=N&per_page=L` until an empty or short page), each
page's JSON parsed into Python objects. Prints
`PYTHON mode=… rows=N seconds=S rows_per_s=R`.

    python baseline.py BASE_URL PER_PAGE count     # parse and count: memory flat
    python baseline.py BASE_URL PER_PAGE collect   # keep every record in a list,
                                                   # as a script that writes them
                                                   # out at the end would
"""

import sys
import time

import requests

base_url, per_page, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
session = requests.Session()
kept = []
rows = 0
page = 1
started = time.perf_counter()
while True:
    response = session.get(
        f"{base_url}/records", params={"page": page, "per_page": per_page}, timeout=60
    )
    response.raise_for_status()
    records = response.json()
    if not records:
        break
    rows += len(records)
    if mode == "collect":
        kept.extend(records)
    if len(records) < per_page:
        break
    page += 1
seconds = time.perf_counter() - started
print(f"PYTHON mode={mode} rows={rows} seconds={seconds:.3f} rows_per_s={rows / seconds:.0f}")
