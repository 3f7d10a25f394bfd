// Upload one file with tus-js-client (the stock client, unchanged) and print
// one JSON line: {"ok": true, "url": ...} or {"ok": false, "error": ...}.
// Driven by tests/test_e2e_tus_clients.py:
//   node upload.js '{"endpoint": ..., "file": ..., "chunkSize": ..., ...}'
'use strict'
const fs = require('fs')
const tus = require('tus-js-client')

const spec = JSON.parse(process.argv[2])
const data = fs.readFileSync(spec.file)
const events = { retries: 0, progress: 0 }

const options = {
  endpoint: spec.endpoint,
  metadata: spec.metadata || {},
  headers: spec.headers || {},
  retryDelays: spec.retryDelays || [0, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000,
    1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
  onShouldRetry (err, retryAttempt, opts) {
    events.retries += 1
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0
    // The default rule: network errors and 5xx, 409 and 423 are retried.
    return status === 0 || status >= 500 || status === 409 || status === 423
  },
  onProgress (sent, total) { events.progress += 1 },
  onError (error) {
    console.log(JSON.stringify({ ok: false, error: String(error), events }))
    process.exit(1)
  },
  onSuccess () {
    console.log(JSON.stringify({ ok: true, url: upload.url, events }))
    process.exit(0)
  }
}
if (spec.chunkSize) options.chunkSize = spec.chunkSize
if (spec.parallelUploads) options.parallelUploads = spec.parallelUploads
if (spec.uploadLengthDeferred) {
  options.uploadLengthDeferred = true
}
if (spec.overridePatchMethod) options.overridePatchMethod = true
// 'ietf-draft-05': the IETF draft's interop version 6 instead of tus 1.0.
if (spec.protocol) options.protocol = spec.protocol

const upload = new tus.Upload(data, options)
upload.start()
