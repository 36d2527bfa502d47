#!/usr/bin/env node
// Sluice's gRPC contract as a Node.js user meets it: @grpc/grpc-js with stubs loaded from the
// shipped .proto files by @grpc/proto-loader, and the standard `grpc-status-details-bin`
// trailer read as a google.rpc.Status whose details pack a sluice.v1.ErrorDetail.
//
//   node contract_test.js COORDINATOR_ADDRESS REPLICATION_FACTOR
//
// Creates a topic, produces idempotently (a retried request must not duplicate), fetches, joins
// a consumer group and commits, and reads the code and detail of every error it provokes.
'use strict';

const path = require('path');
const assert = require('assert/strict');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_DIR = path.join(__dirname, '..', '..', '..', 'proto', 'proto');
const FILES = ['admin', 'errors', 'groups', 'log', 'metadata_records'].map((f) => `sluice/v1/${f}.proto`);

const definition = protoLoader.loadSync(FILES, {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const sluice = grpc.loadPackageDefinition(definition).sluice.v1;

// google.rpc.Status and google.protobuf.Any as every gRPC library defines them (the same wire
// form), to read the details trailer.
const rpc = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message Any { string type_url = 1; bytes value = 2; }
`).root;
const RpcStatus = rpc.lookupType('google.rpc.Status');
const errorsRoot = new protobuf.Root();
errorsRoot.loadSync(path.join(PROTO_DIR, 'sluice/v1/errors.proto'));
const ErrorDetail = errorsRoot.lookupType('sluice.v1.ErrorDetail');

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (err, answer) => (err ? reject(err) : resolve(answer)));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The ErrorDetail of a failed call, from the google.rpc.Status in its trailer.
function detailOf(err) {
  const bin = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  assert.ok(bin, `${err.code} ${err.details} carries no grpc-status-details-bin`);
  const status = RpcStatus.decode(bin);
  assert.equal(status.code, err.code, "the status's code equals the call's");
  assert.equal(status.message, err.details, "the status's message equals the call's");
  const any = status.details[0];
  assert.equal(any.type_url || any.typeUrl, 'type.googleapis.com/sluice.v1.ErrorDetail');
  return ErrorDetail.toObject(ErrorDetail.decode(any.value), { enums: String, defaults: true });
}

async function expectError(promise, name) {
  try {
    await promise;
  } catch (err) {
    const detail = detailOf(err);
    assert.equal(detail.name, name, `expected ${name}, got ${detail.name}: ${err.details}`);
    console.log(`ok  ${name}: ${grpc.status[err.code]} ${JSON.stringify(err.details)}`);
    return detail;
  }
  assert.fail(`expected ${name}, the call succeeded`);
}

// Retries while the error says it is retriable, as a user following the contract would.
async function retrying(fn) {
  for (let i = 0; i < 100; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!err.metadata || !detailOf(err).retriable) throw err;
      await sleep(100);
    }
  }
  assert.fail('still refused after retrying');
}

async function main() {
  const [coordinator, rfArg] = process.argv.slice(2);
  const rf = Number(rfArg);
  const insecure = grpc.credentials.createInsecure();
  const admin = new sluice.Admin(coordinator, insecure);
  const metadata = new sluice.Metadata(coordinator, insecure);
  const topic = `js-${crypto.randomBytes(4).toString('hex')}`;

  await call(admin, 'CreateTopic', { name: topic, partitions: 1, replication_factor: rf });
  await expectError(call(admin, 'CreateTopic', { name: topic, partitions: 1 }), 'TOPIC_ALREADY_EXISTS');

  let md;
  let p;
  for (let i = 0; i < 200; i++) {
    md = await call(metadata, 'GetMetadata', { topics: [topic] });
    p = md.topics[0].partitions[0];
    if (p.leader >= 0 && p.isr.length === rf) break;
    await sleep(50);
  }
  assert.ok(p.leader >= 0 && p.isr.length === rf, 'the partition got a leader and a full ISR');
  const nodes = Object.fromEntries(md.nodes.map((n) => [n.node_id, n.address]));
  const log = new sluice.Log(nodes[p.leader], insecure);

  const ids = await call(metadata, 'InitProducerId', {});
  const produce = (values, sequence, name = topic, target = log) =>
    call(target, 'Produce', {
      topic: name,
      partition: 0,
      acks: -1,
      timeout_ms: 10000,
      leader_epoch: -1,
      records: { records: values.map((v) => ({ value: Buffer.from(v), has_value: true })) },
      producer: { producer_id: ids.producer_id, producer_epoch: ids.producer_epoch, base_sequence: sequence },
    });
  const first = await retrying(() => produce(['a', 'b', 'c'], 0));
  const again = await produce(['a', 'b', 'c'], 0); // a retry after a lost answer
  assert.equal(again.base_offset, first.base_offset, 'a retried request is not written twice');
  const second = await produce(['d', 'e'], 3);
  assert.equal(second.base_offset, first.base_offset + 3, 'the next request follows the first');
  console.log(`ok  idempotent produce: offsets ${first.base_offset}, retry ${again.base_offset}, ${second.base_offset}`);
  await expectError(produce(['x'], 0, 'no-such-topic'), 'UNKNOWN_TOPIC');
  if (rf > 1) {
    const follower = p.replicas.find((n) => n !== p.leader);
    const other = new sluice.Log(nodes[follower], insecure);
    const hint = await expectError(produce(['x'], 5, topic, other), 'NOT_LEADER');
    assert.ok(hint.retriable && hint.leader.nodeId === p.leader, `the hint names the leader: ${JSON.stringify(hint)}`);
  }

  const fetched = await call(log, 'Fetch', { topic, partition: 0, offset: 0, decode: true, max_wait_ms: 1000 });
  const values = fetched.records.map((r) => r.value.toString());
  assert.deepEqual(values, ['a', 'b', 'c', 'd', 'e'], 'fetched exactly what was produced once');
  console.log(`ok  fetch: ${values.length} records, high watermark ${fetched.high_watermark}`);

  const group = `js-group-${crypto.randomBytes(4).toString('hex')}`;
  const found = await retrying(() => call(admin, 'FindCoordinator', { group_id: group }));
  const groups = new sluice.Groups(found.address, insecure);
  const joined = await retrying(() =>
    call(groups, 'Heartbeat', { group_id: group, member_epoch: 0, subscribed_topics: [topic] }));
  let member = joined;
  for (let i = 0; i < 100 && !member.assignment.some((a) => a.topic === topic); i++) {
    await sleep(50);
    member = await retrying(() =>
      call(groups, 'Heartbeat', { group_id: group, member_id: joined.member_id, member_epoch: member.member_epoch }));
  }
  assert.ok(member.assignment.some((a) => a.topic === topic), 'the member was assigned the partition');
  await call(groups, 'CommitOffsets', {
    group_id: group,
    member_id: joined.member_id,
    member_epoch: member.member_epoch,
    offsets: [{ topic, partition: 0, offset: 5 }],
  });
  const committed = await call(groups, 'FetchOffsets', { group_id: group });
  assert.deepEqual(committed.offsets.map((c) => [c.topic, c.offset]), [[topic, 5]]);
  await expectError(
    call(groups, 'CommitOffsets', {
      group_id: group,
      member_id: 'nobody',
      member_epoch: 1,
      offsets: [{ topic, partition: 0, offset: 1 }],
    }),
    'UNKNOWN_MEMBER_ID',
  );
  await call(groups, 'Heartbeat', { group_id: group, member_id: joined.member_id, member_epoch: -1 });
  console.log(`ok  group ${group}: joined, assigned, committed 5, left`);
  console.log('PASS');
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('FAILED:', err);
    process.exit(1);
  },
);
