'use strict';
// A Node.js gRPC client of RegistryService, built from protos/trainforge/v1/registry.proto at run
// time: proves the contract works for a non-Python client — register, get, search, the
// ALREADY_EXISTS code, and the google.rpc.BadRequest carried in the grpc-status-details-bin trailer.
//
// Run through tests/test_node_client.py, which starts the server and sets:
//   TRAINFORGE_GRPC        host:port of the gRPC server
//   GOOGLEAPIS_PROTO_DIR   folder holding google/api/*.proto and google/rpc/*.proto
//   TRAINFORGE_API_KEY     a `trainer` key, sent as `authorization: Bearer <key>` (unset: no header)
// (google/protobuf well-known types are bundled with protobufjs, which proto-loader uses.)

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const ADDRESS = process.env.TRAINFORGE_GRPC;
const GOOGLEAPIS = process.env.GOOGLEAPIS_PROTO_DIR;
const API_KEY = process.env.TRAINFORGE_API_KEY || '';
if (!ADDRESS || !GOOGLEAPIS) {
  throw new Error('set TRAINFORGE_GRPC (host:port) and GOOGLEAPIS_PROTO_DIR; tests/test_node_client.py does');
}
const PROTOS = path.resolve(__dirname, '..', '..', 'protos');
const DEADLINE_MS = 15000;

// Unique per run so that reruns against one database never collide.
const NAME = `node-client-${crypto.randomUUID().slice(0, 8)}`;
const SEED = {
  name: NAME,
  version: '1.0.0',
  description: 'Fine-tuned conversational model, registered from Node.js',
  model_type: 'fine_tuned',
  size_mb: 2048,
  parameter_count: '355000000', // int64: a decimal string, as proto3 JSON writes it
  architecture: {
    model_family: 'GPT', layers: 24, hidden_size: 1024, attention_heads: 16,
    vocab_size: 50257, max_sequence_length: 1024,
  },
  performance_metrics: { accuracy: 0.87, f1_score: 0.84 },
};

function loadRegistryService() {
  const definition = protoLoader.loadSync('trainforge/v1/registry.proto', {
    includeDirs: [PROTOS, GOOGLEAPIS],
    keepCase: true, // field names as in the .proto (snake_case)
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).trainforge.v1.RegistryService;
}

// google.rpc.Status and its detail messages, to decode the binary status trailer.
function loadStatusTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(GOOGLEAPIS, target);
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
  return {
    Status: root.lookupType('google.rpc.Status'),
    BadRequest: root.lookupType('google.rpc.BadRequest'),
    ErrorInfo: root.lookupType('google.rpc.ErrorInfo'),
  };
}

function credentials(token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

/** Calls a unary method with the API key; resolves with the response, rejects with grpc-js's
 * ServiceError. (Call credentials need TLS in grpc-js, so the key goes in per-call metadata.) */
function unary(client, method, request, token = API_KEY) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, credentials(token), { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

/** Runs a call that must fail; returns its ServiceError. */
async function failure(promise) {
  try {
    const response = await promise;
    assert.fail(`expected an error, got ${JSON.stringify(response)}`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err;
  }
}

function assertClose(actual, expected, label) {
  assert.ok(Math.abs(actual - expected) < 1e-9, `${label}: ${actual} != ${expected}`);
}

describe('RegistryService from a Node.js client', () => {
  let client;
  let types;

  before(async () => {
    const RegistryService = loadRegistryService();
    types = loadStatusTypes();
    client = new RegistryService(ADDRESS, grpc.credentials.createInsecure());
    await new Promise((resolve, reject) =>
      client.waitForReady(new Date(Date.now() + DEADLINE_MS), (err) => (err ? reject(err) : resolve())));
  });

  after(() => client && client.close());

  it('registers a version', async () => {
    const { data } = await unary(client, 'RegisterModel', { model_version: SEED });
    assert.equal(data.name, NAME);
    assert.equal(data.version, '1.0.0');
    assert.equal(data.model_type, 'fine_tuned');
    assert.equal(data.parameter_count, '355000000');
    assert.equal(data.size_mb, 2048);
    assert.equal(data.architecture.model_family, 'GPT');
    assert.equal(data.architecture.layers, 24);
    assert.match(data.model_version_id, /^[0-9a-f-]{36}$/);
    assert.ok(data.create_time && data.create_time.seconds > 0, 'create_time is set');
  });

  it('gets the model by name', async () => {
    const { data } = await unary(client, 'GetModel', { model_id: NAME });
    assert.equal(data.name, NAME);
    assert.equal(data.latest_version, '1.0.0');
    assert.equal(data.version_count, 1);
    assert.equal(data.latest.version, '1.0.0');
    assert.equal(data.latest.description, SEED.description);
    assertClose(data.latest.performance_metrics.accuracy, 0.87, 'accuracy');
    assertClose(data.latest.performance_metrics.f1_score, 0.84, 'f1_score');
  });

  it('finds the version with an AIP-160 filter', async () => {
    const filter = `name = "${NAME}" AND metrics.accuracy > 0.5`;
    const reply = await unary(client, 'SearchModels', { filter });
    assert.equal(reply.data.length, 1, `one result for ${filter}: ${JSON.stringify(reply.data)}`);
    assert.equal(reply.total_size, 1);
    const [found] = reply.data;
    assert.equal(found.name, NAME);
    assert.equal(found.version, '1.0.0');
    assertClose(found.performance_metrics.accuracy, 0.87, 'accuracy');

    const none = await unary(client, 'SearchModels', { filter: `name = "${NAME}" AND metrics.accuracy > 0.9` });
    assert.equal(none.data.length, 0);
  });

  it('refuses a call without an API key with UNAUTHENTICATED', { skip: !API_KEY && 'no TRAINFORGE_API_KEY' }, async () => {
    const err = await failure(unary(client, 'GetModel', { model_id: NAME }, ''));
    assert.equal(err.code, grpc.status.UNAUTHENTICATED, `code ${err.code}: ${err.details}`);
  });

  it('refuses the same version twice with ALREADY_EXISTS', async () => {
    const err = await failure(unary(client, 'RegisterModel', { model_version: SEED }));
    assert.equal(err.code, grpc.status.ALREADY_EXISTS, `code ${err.code}: ${err.details}`);
    assert.equal(err.code, 6);
  });

  it('lists every violation of a bad registration in a google.rpc.BadRequest', async () => {
    const bad = { name: '', version: 'bad version', model_type: 'not_a_type', size_mb: -1 };
    const err = await failure(unary(client, 'RegisterModel', { model_version: bad }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, `code ${err.code}: ${err.details}`);
    assert.equal(err.code, 3);

    const trailer = err.metadata.get('grpc-status-details-bin');
    assert.equal(trailer.length, 1, 'one grpc-status-details-bin trailer');
    const status = types.Status.decode(trailer[0]);
    assert.equal(status.code, 3);
    assert.equal(status.message, err.details);

    const byType = new Map(status.details.map((any) => [any.type_url.split('/').pop(), any.value]));
    assert.ok(byType.has('google.rpc.BadRequest'), `details: ${[...byType.keys()]}`);
    const badRequest = types.BadRequest.decode(byType.get('google.rpc.BadRequest'));
    const fields = badRequest.field_violations.map((v) => v.field).sort();
    assert.deepEqual(fields, ['model_type', 'name', 'size_mb', 'version']);
    for (const v of badRequest.field_violations) assert.ok(v.description, `${v.field} has a description`);

    assert.ok(byType.has('google.rpc.ErrorInfo'), `details: ${[...byType.keys()]}`);
    const info = types.ErrorInfo.decode(byType.get('google.rpc.ErrorInfo'));
    assert.equal(info.domain, 'trainforge');
  });
});
