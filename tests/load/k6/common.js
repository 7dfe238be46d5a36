// Shared helpers for the k6 scenarios. Configuration comes only from the environment:
//   API_URL           base URL of the broker (default http://127.0.0.1:8080)
//   BROKER_API_TOKEN  a track token (required; never written in these files)
//   API_BASE_PATH     default /v1
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';

export const API_URL = (__ENV.API_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
export const BASE_PATH = __ENV.API_BASE_PATH || '/v1';
const TOKEN = __ENV.BROKER_API_TOKEN;

export const allocationSuccess = new Rate('allocation_success');
export const poolExhausted = new Counter('pool_exhausted');
export const contention = new Counter('contention');
export const idempotentReplays = new Counter('idempotent_replays');
export const replayMismatch = new Counter('replay_mismatch');
export const allocationLatency = new Trend('allocation_latency', true);

export function requireToken() {
  if (!TOKEN) {
    throw new Error('set BROKER_API_TOKEN (a track token) in the environment');
  }
}

// A run-unique prefix so repeated runs never replay each other's owners.
export const RUN_ID = __ENV.RUN_ID || `${Date.now().toString(36)}`;

export function allocate(owner, extraHeaders) {
  const headers = Object.assign(
    {
      Authorization: `Bearer ${TOKEN}`,
      'X-Instruqt-Sandbox-ID': owner,
    },
    extraHeaders || {},
  );
  const res = http.post(`${API_URL}${BASE_PATH}/allocate`, null, {
    headers,
    tags: { name: 'allocate' },
    // 409/503 are answers, not transport failures: keep them out of http_req_failed.
    responseCallback: http.expectedStatuses(200, 201, 409),
  });
  allocationLatency.add(res.timings.duration);
  const ok = res.status === 200 || res.status === 201;
  allocationSuccess.add(ok);
  if (res.status === 200) idempotentReplays.add(1);
  if (res.status === 409) poolExhausted.add(1);
  if (res.status === 503) {
    let code = '';
    try { code = res.json('detail.code'); } catch (e) { code = ''; }
    if (code === 'CONTENTION') contention.add(1);
  }
  return res;
}

export function sandboxId(res) {
  try {
    return res.json('sandbox_id');
  } catch (e) {
    return null;
  }
}

export const thresholds = {
  http_req_duration: ['p(95)<300', 'p(99)<500'],
  http_req_failed: ['rate<0.05'],
  allocation_latency: ['p(95)<300', 'p(99)<500'],
};
