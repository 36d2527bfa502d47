#!/usr/bin/env python3
"""Sluice's gRPC contract as a Python user meets it: stubs generated from the shipped .proto
files with grpcio-tools, errors read with grpcio-status's standard `rpc_status.from_call`.

    contract_test.py COORDINATOR_ADDRESS REPLICATION_FACTOR

Creates a topic, produces idempotently (a retried request must not duplicate), fetches,
joins a consumer group and commits, provokes the errors a user can meet and reads each one's
code and `sluice.v1.ErrorDetail`, and lists each port's services over reflection v1 and
v1alpha. Exits non-zero on the first failed check.
"""

import os
import sys
import tempfile
import time
import uuid

import grpc
import grpc_tools
from grpc_status import rpc_status
from grpc_tools import protoc
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2

PROTO_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "proto", "proto")


def generate_stubs():
    out = tempfile.mkdtemp(prefix="sluice-py-stubs-")
    files = sorted(
        os.path.join("sluice", "v1", f)
        for f in os.listdir(os.path.join(PROTO_DIR, "sluice", "v1"))
        if f.endswith(".proto")
    )
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        sys.exit("protoc failed on the shipped .proto files")
    sys.path.insert(0, out)


generate_stubs()
from sluice.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from sluice.v1 import errors_pb2  # noqa: E402
from sluice.v1 import groups_pb2, groups_pb2_grpc  # noqa: E402
from sluice.v1 import log_pb2, log_pb2_grpc  # noqa: E402


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


def error_of(err):
    """The call's google.rpc.Status and the ErrorDetail packed in it, by the standard helper."""
    status = rpc_status.from_call(err)
    check(status is not None, f"{err.code()} carries no google.rpc.Status: {err.details()}")
    check(status.code == err.code().value[0], "the status's code equals the call's")
    detail = errors_pb2.ErrorDetail()
    check(status.details[0].Unpack(detail), f"details[0] is an ErrorDetail: {status.details}")
    info = error_details_pb2.ErrorInfo()
    check(status.details[1].Unpack(info), "details[1] is a google.rpc.ErrorInfo")
    check(info.reason == detail.name and info.domain == "sluice.v1", f"ErrorInfo {info}")
    return detail


def expect_error(call, name):
    try:
        call()
    except grpc.RpcError as err:
        detail = error_of(err)
        check(detail.name == name, f"expected {name}, got {detail.name}: {err.details()}")
        check(errors_pb2.ErrorCode.Name(detail.code) == name, "code and name agree")
        print(f"ok  {name}: {err.code().name} {err.details()!r}")
        return detail
    sys.exit(f"FAILED: expected {name}, the call succeeded")


def retrying(call, attempts=100):
    """Retries while the error says it is retriable, as a user following the contract would."""
    for _ in range(attempts):
        try:
            return call()
        except grpc.RpcError as err:
            detail = error_of(err)
            if not detail.retriable:
                raise
            time.sleep(0.1)
    sys.exit("FAILED: still refused after retrying")


def list_services(address, version):
    channel = grpc.insecure_channel(address)
    # v1 and v1alpha messages are the same on the wire; only the method path differs.
    method = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = method(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for a in answers for s in a.list_services_response.service}
    channel.close()
    return names


def main():
    coordinator, rf = sys.argv[1], int(sys.argv[2])
    coord = grpc.insecure_channel(coordinator)
    admin = admin_pb2_grpc.AdminStub(coord)
    metadata = admin_pb2_grpc.MetadataStub(coord)
    topic = f"py-{uuid.uuid4().hex[:8]}"

    admin.CreateTopic(admin_pb2.CreateTopicRequest(name=topic, partitions=1, replication_factor=rf))
    expect_error(
        lambda: admin.CreateTopic(admin_pb2.CreateTopicRequest(name=topic, partitions=1)),
        "TOPIC_ALREADY_EXISTS",
    )
    expect_error(
        lambda: admin.CreateTopic(admin_pb2.CreateTopicRequest(name="bad name!", partitions=1)),
        "INVALID_TOPIC_NAME",
    )

    # The partition's leader and full ISR, from the metadata.
    for _ in range(200):
        md = metadata.GetMetadata(admin_pb2.GetMetadataRequest(topics=[topic]))
        p = md.topics[0].partitions[0]
        if p.leader >= 0 and len(p.isr) == rf:
            break
        time.sleep(0.05)
    else:
        sys.exit("FAILED: the partition never got a leader and a full ISR")
    nodes = {n.node_id: n.address for n in md.nodes}
    log = log_pb2_grpc.LogStub(grpc.insecure_channel(nodes[p.leader]))

    ids = metadata.InitProducerId(admin_pb2.InitProducerIdRequest())

    def produce(values, sequence, target=log, name=topic):
        return target.Produce(
            log_pb2.ProduceRequest(
                topic=name,
                partition=0,
                acks=-1,
                timeout_ms=10000,
                leader_epoch=-1,
                records=log_pb2.RecordList(
                    records=[log_pb2.Record(value=v, has_value=True) for v in values]
                ),
                producer=log_pb2.ProducerSequence(
                    producer_id=ids.producer_id,
                    producer_epoch=ids.producer_epoch,
                    base_sequence=sequence,
                ),
            )
        )

    first = retrying(lambda: produce([b"a", b"b", b"c"], 0))
    again = produce([b"a", b"b", b"c"], 0)  # a retry after a lost answer
    check(again.base_offset == first.base_offset, "a retried request is not written twice")
    second = produce([b"d", b"e"], 3)
    check(second.base_offset == first.base_offset + 3, "the next request follows the first")
    print(f"ok  idempotent produce: offsets {first.base_offset}, retry {again.base_offset}, {second.base_offset}")
    expect_error(lambda: produce([b"x"], 40), "OUT_OF_ORDER_SEQUENCE")
    expect_error(lambda: produce([b"x"], 0, name="no-such-topic"), "UNKNOWN_TOPIC")
    if rf > 1:
        follower = next(n for n in p.replicas if n != p.leader)
        other = log_pb2_grpc.LogStub(grpc.insecure_channel(nodes[follower]))
        hint = expect_error(lambda: produce([b"x"], 5, target=other), "NOT_LEADER")
        check(hint.retriable and hint.leader.node_id == p.leader, f"the hint names the leader: {hint}")

    fetched = log.Fetch(log_pb2.FetchRequest(topic=topic, partition=0, offset=0, decode=True, max_wait_ms=1000))
    values = [r.value for r in fetched.records]
    check(values == [b"a", b"b", b"c", b"d", b"e"], f"fetched exactly what was produced once: {values}")
    print(f"ok  fetch: {len(values)} records, high watermark {fetched.high_watermark}")
    expect_error(
        lambda: log.Fetch(log_pb2.FetchRequest(topic=topic, partition=0, offset=99)),
        "OFFSET_OUT_OF_RANGE",
    )

    group = f"py-group-{uuid.uuid4().hex[:8]}"
    found = retrying(lambda: admin.FindCoordinator(admin_pb2.FindCoordinatorRequest(group_id=group)))
    groups = groups_pb2_grpc.GroupsStub(grpc.insecure_channel(found.address))
    joined = retrying(
        lambda: groups.Heartbeat(
            groups_pb2.GroupHeartbeatRequest(group_id=group, member_epoch=0, subscribed_topics=[topic])
        )
    )
    member = joined
    for _ in range(100):
        if any(a.topic == topic for a in member.assignment):
            break
        time.sleep(0.05)
        member = retrying(
            lambda: groups.Heartbeat(
                groups_pb2.GroupHeartbeatRequest(
                    group_id=group, member_id=joined.member_id, member_epoch=member.member_epoch
                )
            )
        )
    check(any(a.topic == topic for a in member.assignment), "the member was assigned the partition")
    groups.CommitOffsets(
        groups_pb2.CommitOffsetsRequest(
            group_id=group,
            member_id=joined.member_id,
            member_epoch=member.member_epoch,
            offsets=[groups_pb2.OffsetCommit(topic=topic, partition=0, offset=5)],
        )
    )
    committed = groups.FetchOffsets(groups_pb2.FetchOffsetsRequest(group_id=group))
    check([(c.topic, c.offset) for c in committed.offsets] == [(topic, 5)], f"committed {committed}")
    expect_error(
        lambda: groups.CommitOffsets(
            groups_pb2.CommitOffsetsRequest(
                group_id=group, member_id="nobody", member_epoch=1,
                offsets=[groups_pb2.OffsetCommit(topic=topic, partition=0, offset=1)],
            )
        ),
        "UNKNOWN_MEMBER_ID",
    )
    groups.Heartbeat(
        groups_pb2.GroupHeartbeatRequest(group_id=group, member_id=joined.member_id, member_epoch=-1)
    )
    print(f"ok  group {group}: joined, assigned, committed 5, left")

    health = "grpc.health.v1.Health"
    reflection = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
    expected = {
        coordinator: {"sluice.v1.Admin", "sluice.v1.Metadata", health} | reflection,
        nodes[p.leader]: {"sluice.v1.Log", "sluice.v1.Groups", health} | reflection,
    }
    for address, services in expected.items():
        for version in ("v1", "v1alpha"):
            listed = list_services(address, version)
            check(listed == services, f"{address} reflection {version} lists {sorted(listed)}")
    print("ok  reflection v1 and v1alpha list each port's own services")
    print("PASS")


if __name__ == "__main__":
    main()
