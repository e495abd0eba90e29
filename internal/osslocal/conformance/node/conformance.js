'use strict';
// Checks the local OSS server with the official ali-oss client, in V1 and V4
// signature modes. Prints one line per check; exits non-zero on any failure.
//
// Environment: OSS_ENDPOINT (http://127.0.0.1:PORT), OSS_HOST_ENDPOINT
// (http://localhost:PORT, for presigning: ali-oss refuses IP endpoints there),
// OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET, OSS_BUCKET, OSS_REGION.

const assert = require('assert');
const crypto = require('crypto');
const http = require('http');
const OSS = require('ali-oss');

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const cfg = {
  endpoint: env('OSS_ENDPOINT'),
  hostEndpoint: env('OSS_HOST_ENDPOINT'),
  accessKeyId: env('OSS_ACCESS_KEY_ID'),
  accessKeySecret: env('OSS_ACCESS_KEY_SECRET'),
  bucket: env('OSS_BUCKET'),
  region: env('OSS_REGION'),
};

let passed = 0;
function ok(label, what) {
  passed++;
  console.log(`ok ${label}: ${what}`);
}

function client(v4, overrides = {}) {
  return new OSS({
    endpoint: cfg.endpoint,
    accessKeyId: cfg.accessKeyId,
    accessKeySecret: cfg.accessKeySecret,
    bucket: cfg.bucket,
    region: `oss-${cfg.region}`,
    authorizationV4: v4,
    sldEnable: true, // path-style: /bucket/key
    timeout: 60000,
    retryMax: 0,
    ...overrides,
  });
}

function fetch(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, res => {
        const chunks = [];
        res.on('data', c => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

async function expectError(promise, status, code) {
  try {
    await promise;
  } catch (err) {
    assert.strictEqual(err.status, status, `status of ${err}`);
    assert.strictEqual(err.code, code, `code of ${err}`);
    return;
  }
  assert.fail(`expected ${code}, got success`);
}

async function suite(label, v4) {
  const c = client(v4);
  const base = `node-${label}/`;
  const keys = ['plain.txt', 'sub dir/with space.bin', 'plus+and&amp', 'ünïcödé/日本'];

  for (const k of keys) {
    const name = base + k;
    const data = crypto.randomBytes(3000);
    const md5 = crypto.createHash('md5').update(data).digest('hex').toUpperCase();
    const put = await c.put(name, data, { meta: { color: 'blue' } });
    assert.strictEqual(put.res.status, 200);
    assert.strictEqual(put.res.headers.etag, `"${md5}"`);
    ok(label, `put ${JSON.stringify(name)} etag`);

    const get = await c.get(name);
    assert.ok(Buffer.compare(get.content, data) === 0, 'content differs');
    ok(label, `get ${JSON.stringify(name)}`);

    const range = await c.get(name, { headers: { Range: 'bytes=100-199' } });
    assert.strictEqual(range.res.status, 206);
    assert.ok(Buffer.compare(range.content, data.subarray(100, 200)) === 0, 'range content differs');
    assert.strictEqual(range.res.headers['content-range'], 'bytes 100-199/3000');
    ok(label, `range get ${JSON.stringify(name)}`);

    const head = await c.head(name);
    assert.strictEqual(head.res.headers['content-length'], '3000');
    assert.strictEqual(head.meta.color, 'blue');
    ok(label, `head ${JSON.stringify(name)} with user meta`);

    const meta = await c.getObjectMeta(name);
    assert.strictEqual(meta.res.headers.etag, `"${md5}"`);
    ok(label, `getObjectMeta ${JSON.stringify(name)}`);
  }

  await expectError(c.get(`${base}missing`), 404, 'NoSuchKey');
  await expectError(c.head(`${base}missing`), 404, 'NoSuchKey');
  ok(label, 'get/head of a missing key is NoSuchKey');

  // Listing: 25 keys in pages of 10, with list (marker) and listV2 (token).
  const listed = [];
  for (let i = 0; i < 25; i++) listed.push(`${base}list/${String(i).padStart(2, '0')}`);
  await Promise.all(listed.map(k => c.put(k, Buffer.from(k))));
  let got = [];
  let marker;
  let pages = 0;
  do {
    // Leave out absent parameters: ali-oss V4 signs without an undefined one but still sends it.
    const query = { prefix: `${base}list/`, 'max-keys': 10 };
    if (marker) query.marker = marker;
    const res = await c.list(query);
    pages++;
    got = got.concat(res.objects.map(o => o.name));
    marker = res.isTruncated ? res.nextMarker : undefined;
  } while (marker);
  assert.deepStrictEqual(got, listed);
  assert.strictEqual(pages, 3);
  ok(label, 'list pages with marker');

  got = [];
  let token;
  pages = 0;
  do {
    const query = { prefix: `${base}list/`, 'max-keys': 10 };
    if (token) query['continuation-token'] = token;
    const res = await c.listV2(query);
    pages++;
    got = got.concat(res.objects.map(o => o.name));
    token = res.isTruncated ? res.nextContinuationToken : undefined;
  } while (token);
  assert.deepStrictEqual(got, listed);
  assert.strictEqual(pages, 3);
  ok(label, 'listV2 pages with continuation-token');

  const delim = await c.listV2({ prefix: base, delimiter: '/' });
  assert.deepStrictEqual(delim.prefixes.sort(), [`${base}list/`, `${base}sub dir/`, `${base}ünïcödé/`].sort());
  ok(label, 'listV2 with delimiter');

  // Multipart: 1.1 MiB in 256 KiB parts.
  const big = crypto.randomBytes(1100 * 1024 + 7);
  const mp = await c.multipartUpload(`${base}multipart.bin`, big, { partSize: 256 * 1024, parallel: 3 });
  assert.strictEqual(mp.res.status, 200);
  const mpGet = await c.get(`${base}multipart.bin`);
  assert.ok(Buffer.compare(mpGet.content, big) === 0, 'multipart content differs');
  ok(label, 'multipartUpload then get');

  // Presigned URLs (on a host name: ali-oss refuses IP endpoints here).
  const hc = client(v4, { endpoint: cfg.hostEndpoint });
  const signed = v4
    ? await hc.signatureUrlV4('GET', 60, { headers: {} }, `${base}plain.txt`)
    : hc.signatureUrl(`${base}plain.txt`, { expires: 60 });
  const fetched = await fetch(signed);
  assert.strictEqual(fetched.status, 200, fetched.body.toString());
  assert.strictEqual(fetched.body.length, 3000);
  ok(label, `${v4 ? 'signatureUrlV4' : 'signatureUrl'} GET`);
  const tampered = await fetch(signed.replace('plain.txt', 'plain.txx'));
  assert.strictEqual(tampered.status, 403);
  ok(label, 'tampered presigned URL is refused');

  // deleteMulti and delete.
  const del = await c.deleteMulti(keys.map(k => base + k), { quiet: false });
  assert.deepStrictEqual(del.deleted.map(d => d.Key).sort(), keys.map(k => base + k).sort());
  await c.delete(`${base}multipart.bin`);
  await c.delete(`${base}multipart.bin`);
  await expectError(c.head(`${base}plain.txt`), 404, 'NoSuchKey');
  ok(label, 'deleteMulti and delete');

  const wrong = client(v4, { accessKeySecret: `${cfg.accessKeySecret}x` });
  await expectError(wrong.put(`${base}denied`, Buffer.from('x')), 403, 'SignatureDoesNotMatch');
  const unknown = client(v4, { accessKeyId: 'LTAIunknown' });
  await expectError(unknown.get(`${base}list/00`), 403, 'InvalidAccessKeyId');
  ok(label, 'wrong secret and unknown key id are refused');
}

async function main() {
  await suite('v1', false);
  await suite('v4', true);
  console.log(`ali-oss conformance: ${passed} passed, 0 failed`);
}

main().catch(err => {
  console.error(`FAIL after ${passed} checks: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
