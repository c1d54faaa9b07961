// Xylem's JavaScript guest helper: write tasks as plain functions of their
// parsed JSON arguments; `plugin({...})` makes the `plugin` world's
// `handler` export (describe and run) for componentize-js.
//
//   import { plugin, Reject, log } from './xylem.js';
//   export const handler = plugin({
//     'hello.greet': {
//       description: 'Returns a greeting for `name`',
//       run({ name }) {
//         if (!name?.trim()) throw new Reject('`name` must be a non-empty string');
//         log(`greeting ${name}`);
//         return `Hello, ${name}!`;
//       },
//     },
//   });
//
// A task returns any JSON value. It ends its job with:
// - `throw new Reject(reason)`: the job can never succeed (no retry);
// - `throw new Retry(reason, delayMs)`: try again (counts as an attempt);
// - anything else thrown: a failure (`plugin-error`, retried per the task's
//   policy) whose reason is the error — never a trap.
import {
  log as hostLog,
  progress as hostProgress,
  heartbeat as hostHeartbeat,
  enqueue as hostEnqueue,
  submitCanvas as hostSubmitCanvas,
} from 'xylem:task/host@0.3.0';

/** The job can never succeed: it ends `failed`, without a retry. */
export class Reject extends Error {}

/** Try the job again (after `delayMs` if given); counts as an attempt. */
export class Retry extends Error {
  constructor(reason, delayMs) {
    super(reason);
    this.delayMs = delayMs;
  }
}

/** A line in the job's log (`level`: trace, debug, info, warn, error). */
export const log = (message, level = 'info') => hostLog(level, String(message));

/** Reports progress (0 to 100) to the job's record. */
export const progress = (percent, message) => hostProgress(percent, message);

/** Tells the worker this job is alive (long loops). */
export const heartbeat = () => hostHeartbeat();

/** `enqueue` was refused; nothing was enqueued. `kind`: quota-exceeded,
 * unknown-task, invalid-arguments or unavailable. */
export class EnqueueRefused extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.kind = kind;
  }
}

/** The enqueue options that are u64 in the WIT. */
const WIDE_ENQUEUE = [
  'delayMs', 'retryBackoffMs', 'retryBackoffMaxMs', 'softTimeLimitMs', 'hardTimeLimitMs', 'fuel',
  'maxMemoryBytes', 'visibilityTimeoutMs', 'expiresMs',
];

/** `'task'` or `{ task, args, queue, priority }` as the WIT `callback`. */
function callback(spec) {
  if (typeof spec === 'string') return { task: spec };
  return { ...spec, args: spec.args === undefined ? undefined : JSON.stringify(spec.args) };
}

/**
 * Enqueues a child job; returns `{ id, duplicate }` (`duplicate`: a `unique`
 * equal job exists, nothing was enqueued, the id is that job's). `options`
 * are the WIT enqueue-options in camelCase (`queue`, `delayMs`, `expiresMs`,
 * `unique: { key, ttlMs }`, `link: 'task'` or `{ task, args }`, `linkError`).
 * Throws `EnqueueRefused` when the host says no.
 */
export function enqueue(task, args = {}, options = undefined) {
  let wit;
  if (options) {
    wit = { ...options };
    for (const key of WIDE_ENQUEUE) {
      if (typeof wit[key] === 'number') wit[key] = BigInt(Math.trunc(wit[key]));
    }
    if (wit.unique) wit.unique = { key: wit.unique.key, ttlMs: BigInt(Math.trunc(wit.unique.ttlMs)) };
    for (const key of ['link', 'linkError']) if (wit[key]) wit[key] = callback(wit[key]);
  }
  try {
    const done = hostEnqueue(task, JSON.stringify(args), wit);
    return { id: done.id, duplicate: done.duplicate };
  } catch (e) {
    const refusal = e?.payload;
    if (refusal?.tag) throw new EnqueueRefused(refusal.tag, refusal.val);
    throw e;
  }
}

/**
 * Enqueues a canvas — chains, groups and chords, nested — given as an
 * object in the format of `xylem canvas submit` (docs/canvas.md); returns
 * its id. Every task in it counts against this run's child quota. Throws
 * `EnqueueRefused` when the host says no.
 */
export function submitCanvas(definition) {
  try {
    return hostSubmitCanvas(JSON.stringify(definition));
  } catch (e) {
    const refusal = e?.payload;
    if (refusal?.tag) throw new EnqueueRefused(refusal.tag, refusal.val);
    throw e;
  }
}

/** The task options that are u64 in the WIT: BigInt for the bindings. */
const WIDE = [
  'retryBackoffMs', 'retryBackoffMaxMs', 'softTimeLimitMs', 'hardTimeLimitMs', 'fuel', 'maxMemoryBytes',
  'visibilityTimeoutMs', 'expiresMs', 'uniqueForMs',
];

/** A task's options as the bindings want them: a plain number is accepted
 * where the WIT says u64 (`fuel: 500e9`). */
function wideOptions(options) {
  const out = { ...options };
  for (const key of WIDE) {
    if (typeof out[key] === 'number') out[key] = BigInt(Math.trunc(out[key]));
  }
  return out;
}

/**
 * The `handler` export for `tasks`: `{ name: { description, options,
 * argsSchema, run(args, info) } }`, where `options` holds the WIT
 * task-options in camelCase (`maxRetries: 5`, `queue: 'emails'`) and
 * `argsSchema` a JSON Schema object.
 */
export function plugin(tasks) {
  return {
    describe: () =>
      Object.entries(tasks).map(([name, t]) => ({
        name,
        description: t.description,
        options: wideOptions(t.options),
        argsSchema: t.argsSchema === undefined ? undefined : JSON.stringify(t.argsSchema),
      })),
    run(info, args) {
      const t = tasks[info.name];
      if (!t) {
        const known = Object.keys(tasks).join(', ') || 'none';
        throw { tag: 'reject', val: `this plugin has no task named \`${info.name}\` (it has: ${known})` };
      }
      try {
        return JSON.stringify(t.run(JSON.parse(args), info) ?? null);
      } catch (e) {
        if (e instanceof Reject) throw { tag: 'reject', val: e.message };
        if (e instanceof Retry) throw {
            tag: 'retry',
            val: { reason: e.message, delayMs: typeof e.delayMs === 'number' ? BigInt(Math.trunc(e.delayMs)) : e.delayMs },
          };
        if (e instanceof Error) {
          if (e.stack) hostLog('error', e.stack);
          throw { tag: 'fail', val: `${e.name}: ${e.message}` };
        }
        throw { tag: 'fail', val: String(e) };
      }
    },
  };
}
