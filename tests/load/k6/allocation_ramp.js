// Ramped allocation load: every iteration is a new owner asking for a sandbox.
//   API_URL=http://127.0.0.1:8080 BROKER_API_TOKEN=... k6 run tests/load/k6/allocation_ramp.js
// Optional: PEAK_VUS (default 50), RAMP (default 30s), HOLD (default 60s),
// NAME_PREFIX (sent as X-Sandbox-Name-Prefix), TRACK (X-Instruqt-Track-ID).
// Seed enough sandboxes first (`sandbox-broker seed --count N`); a 409 POOL_EXHAUSTED
// is counted in pool_exhausted, not as an error.
import { check } from 'k6';
import exec from 'k6/execution';
import { allocate, requireToken, RUN_ID, thresholds } from './common.js';

const PEAK = parseInt(__ENV.PEAK_VUS || '50', 10);
const RAMP = __ENV.RAMP || '30s';
const HOLD = __ENV.HOLD || '60s';

export const options = {
  scenarios: {
    allocation_ramp: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: PEAK },
        { duration: HOLD, target: PEAK },
        { duration: '10s', target: 0 },
      ],
      gracefulRampDown: '5s',
    },
  },
  thresholds: Object.assign({}, thresholds, {
    allocation_success: ['rate>0.95'],
  }),
};

export function setup() {
  requireToken();
}

export default function () {
  const owner = `ramp-${RUN_ID}-${exec.scenario.iterationInTest}`;
  const headers = {};
  if (__ENV.NAME_PREFIX) headers['X-Sandbox-Name-Prefix'] = __ENV.NAME_PREFIX;
  if (__ENV.TRACK) headers['X-Instruqt-Track-ID'] = __ENV.TRACK;
  const res = allocate(owner, headers);
  check(res, {
    'allocated (201) or pool exhausted (409)': (r) => r.status === 201 || r.status === 409,
  });
}
