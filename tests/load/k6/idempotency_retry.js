// Idempotency under retries: 10% of successful allocations are retried with the same
// owner (as a lab script would after a timeout) and must return the same sandbox (200).
//   API_URL=... BROKER_API_TOKEN=... k6 run tests/load/k6/idempotency_retry.js
// Optional: VUS (default 30), DURATION (default 60s), RETRY_FRACTION (default 0.1).
import { check } from 'k6';
import exec from 'k6/execution';
import {
  allocate, replayMismatch, requireToken, RUN_ID, sandboxId, thresholds,
} from './common.js';

const RETRY_FRACTION = parseFloat(__ENV.RETRY_FRACTION || '0.1');

export const options = {
  scenarios: {
    idempotency_retry: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '30', 10),
      duration: __ENV.DURATION || '60s',
    },
  },
  thresholds: Object.assign({}, thresholds, {
    replay_mismatch: ['count==0'],
    idempotent_replays: ['count>0'],
  }),
};

export function setup() {
  requireToken();
}

export default function () {
  const owner = `retry-${RUN_ID}-${exec.scenario.iterationInTest}`;
  const first = allocate(owner);
  if (first.status !== 201) {
    check(first, { 'allocated or pool exhausted': (r) => r.status === 409 });
    return;
  }
  if (Math.random() >= RETRY_FRACTION) return;
  const again = allocate(owner);
  const same = again.status === 200 && sandboxId(again) === sandboxId(first);
  if (!same) replayMismatch.add(1);
  check(again, {
    'retry answers 200': (r) => r.status === 200,
    'retry returns the same sandbox': () => same,
  });
}
