"""Produces records with the Confluent Python client's own serializers, the way services do.

Reads a JSON spec (argv[1]): bootstrap servers, topic, registry URL, format ("avro" with an
Avro schema, or "protobuf" with a FileDescriptorSet file and a message name) and records, each
{"partition": p, "value": {...}} to serialize, or {"partition": p, "raw_hex": "..."} to send as
it is. Writes [[partition, offset, hex of the bytes sent], ...] to the spec's "out" file.
"""

import json
import sys

from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    registry = SchemaRegistryClient({"url": spec["registry"]})
    if spec["format"] == "avro":
        serializer = AvroSerializer(registry, spec["schema"])

        def to_value(record):
            return record
    else:
        from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

        with open(spec["descriptor_set"], "rb") as f:
            files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            pool.Add(file)
        message_type = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(spec["message"])
        )
        serializer = ProtobufSerializer(
            message_type, registry, {"use.deprecated.format": False}
        )

        def to_value(record):
            return json_format.ParseDict(record, message_type())

    settings = {"bootstrap.servers": spec["bootstrap"], "linger.ms": 5}
    serializing = SerializingProducer(dict(settings, **{"value.serializer": serializer}))
    raw = Producer(settings)
    delivered = []
    failures = []

    def report(error, message):
        if error is not None:
            failures.append(str(error))
        else:
            delivered.append([message.partition(), message.offset(), message.value().hex()])

    for record in spec["records"]:
        if "raw_hex" in record:
            # Flushed first, so that offsets follow the spec's order within a partition.
            serializing.flush(30)
            raw.produce(
                spec["topic"],
                value=bytes.fromhex(record["raw_hex"]),
                partition=record["partition"],
                on_delivery=report,
            )
            raw.flush(30)
        else:
            serializing.produce(
                spec["topic"],
                value=to_value(record["value"]),
                partition=record["partition"],
                on_delivery=report,
            )
            serializing.poll(0)
    serializing.flush(30)
    raw.flush(30)
    if failures or len(delivered) != len(spec["records"]):
        sys.exit(f"delivered {len(delivered)} of {len(spec['records'])}: {failures[:3]}")
    with open(spec["out"], "w") as f:
        json.dump(delivered, f)


if __name__ == "__main__":
    main()
