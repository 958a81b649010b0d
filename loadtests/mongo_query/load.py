"""Loads the benchmark collection `bench.orders` on a MongoDB-wire server.

    python load.py PORT DOCS

Documents: an integer `_id`, Int32 and Int64 numbers, a double, two
strings, a DateTime, a list of strings and an embedded document, about
230 bytes of BSON each. Deterministic, so every run reads the same data.
"""

import datetime
import sys

from pymongo import MongoClient

port, total = int(sys.argv[1]), int(sys.argv[2])
client = MongoClient(f"mongodb://127.0.0.1:{port}/", directConnection=True)
orders = client.bench.orders
orders.drop()
start = datetime.datetime(2024, 1, 1)
regions = ["north", "south", "east", "west"]
chunk = 10_000
for base in range(0, total, chunk):
    orders.insert_many(
        [
            {
                "_id": i,
                "qty": i % 97,
                "big": i * 1_000_003,
                "amount": (i % 10_000) / 100.0,
                "customer": f"customer-{i % 50_000:05d}",
                "region": regions[i % 4],
                "placed": start + datetime.timedelta(seconds=i),
                "tags": ["web", regions[i % 4]],
                "address": {"city": f"city-{i % 1000}", "zip": 10_000 + i % 90_000},
            }
            for i in range(base, min(base + chunk, total))
        ],
        ordered=False,
    )
print(f"loaded {orders.estimated_document_count()} documents", file=sys.stderr)
