"""The baseline: a plain pymongo loop over `bench.orders`, every document
decoded (to Python dicts) and counted, with the same cursor batch size as
Ferry's step (16 384). Prints `PYMONGO rows=N seconds=S`.

    python baseline.py PORT
"""

import sys
import time

from pymongo import MongoClient

port = int(sys.argv[1])
client = MongoClient(f"mongodb://127.0.0.1:{port}/", directConnection=True)
orders = client.bench.orders
started = time.perf_counter()
rows = 0
for document in orders.find({}, batch_size=16_384):
    rows += 1
seconds = time.perf_counter() - started
print(f"PYMONGO rows={rows} seconds={seconds:.3f} rows_per_s={rows / seconds:.0f}")
