// Several labs, many students: each student (owner) allocates 3 times; the first
// answer is 201, the next two replay it (200, same sandbox). Labs are told apart by
// X-Instruqt-Track-ID and, if LAB_PREFIXES is set, by X-Sandbox-Name-Prefix.
//   API_URL=... BROKER_API_TOKEN=... k6 run tests/load/k6/multi_student.js
// Optional: LABS (default 4), STUDENTS_PER_LAB (default 50),
// LAB_PREFIXES (comma-separated name prefixes, one per lab, e.g. "lab-a-,lab-b-").
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import {
  allocate, replayMismatch, requireToken, RUN_ID, sandboxId, thresholds,
} from './common.js';

const LABS = parseInt(__ENV.LABS || '4', 10);
const STUDENTS = parseInt(__ENV.STUDENTS_PER_LAB || '50', 10);
const PREFIXES = (__ENV.LAB_PREFIXES || '').split(',').filter((p) => p);

export const options = {
  scenarios: {
    multi_student: {
      executor: 'per-vu-iterations',
      vus: LABS * STUDENTS,
      iterations: 1,
      maxDuration: __ENV.MAX_DURATION || '5m',
    },
  },
  thresholds: Object.assign({}, thresholds, {
    replay_mismatch: ['count==0'],
  }),
};

export function setup() {
  requireToken();
}

export default function () {
  const student = exec.vu.idInTest - 1;
  const lab = student % LABS;
  const owner = `student-${RUN_ID}-${lab}-${student}`;
  const headers = { 'X-Instruqt-Track-ID': `lab-${lab}` };
  if (PREFIXES.length) headers['X-Sandbox-Name-Prefix'] = PREFIXES[lab % PREFIXES.length];

  let first = null;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const res = allocate(owner, headers);
    if (attempt === 0) {
      first = res;
      check(res, { 'first allocation is 201 (or 409 when the pool is empty)':
        (r) => r.status === 201 || r.status === 409 });
      if (res.status !== 201) return;
    } else {
      const same = res.status === 200 && sandboxId(res) === sandboxId(first);
      if (!same) replayMismatch.add(1);
      check(res, { 'repeat returns the same sandbox (200)': () => same });
    }
    sleep(Math.random() * 0.5);
  }
}
