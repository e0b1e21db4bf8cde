"""Read conversation.tokens with plain aiokafka + fastavro: no tokenlog code, only the .avsc.

    python schemas/examples/read_tokens.py --bootstrap 127.0.0.1:19092 [--topic T] [--limit N]

Prints one JSON line per event: partition, offset, key, event type and its fields.
"""

import argparse
import asyncio
import io
import json
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer
from fastavro.schema import fingerprint, to_parsing_canonical_form

RAW = json.loads((Path(__file__).parent.parent / "conversation.tokens.avsc").read_text())
SCHEMA = fastavro.parse_schema(RAW)
HEADER = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(RAW), "CRC-64-AVRO"))


async def main(bootstrap: str, topic: str, limit: int) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        seen = 0
        async for msg in consumer:
            if msg.value[:10] != HEADER:  # another schema version wrote it: get its .avsc
                raise SystemExit(f"unknown writer schema at {msg.partition}@{msg.offset}")
            record: Any = fastavro.schemaless_reader(
                io.BytesIO(msg.value[10:]),
                SCHEMA,
                None,
                return_record_name=True,
                return_record_name_override=True,
            )
            event_type, fields = record["payload"]
            print(
                json.dumps(
                    {
                        "partition": msg.partition,
                        "offset": msg.offset,
                        "key": msg.key.decode(),
                        "type": event_type.rsplit(".", 1)[-1],
                        **fields,
                    },
                    default=str,
                ),
                flush=True,
            )
            seen += 1
            if seen == limit:
                return
    finally:
        await consumer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic", default="conversation.tokens")
    parser.add_argument("--limit", type=int, default=0, help="stop after N events (0: follow forever)")
    args = parser.parse_args()
    asyncio.run(main(args.bootstrap, args.topic, args.limit))
