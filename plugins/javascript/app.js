// The `hello` example in JavaScript: js.greet, js.echo, js.flaky, js.fanout — the same
// tasks as plugins/hello (Rust: hello.*), c/ (c.*) and python/ (py.*), under
// names of their own so that all four can be pushed side by side.
//
// Build:  xylem plugin build plugins/javascript   (runs `npm install` here first)
import { plugin, Reject, enqueue, log } from './xylem.js';

export const handler = plugin({
  'js.greet': {
    description: 'Returns a greeting for `name`',
    run({ name }) {
      if (typeof name !== 'string' || !name.trim()) {
        throw new Reject('`name` must be a non-empty string');
      }
      log(`greeting ${name}`);
      return `Hello, ${name}!`;
    },
  },
  'js.echo': {
    description: 'Returns its arguments unchanged',
    run: (args) => args,
  },
  'js.flaky': {
    description: 'Fails its first `fail_times` attempts, then succeeds',
    // Interpreted code burns fuel fast: a budget of its own (a plain
    // number is fine where the WIT says u64).
    options: { maxRetries: 5, fuel: 200e9 },
    run({ fail_times: failTimes }, { attempt }) {
      if (!Number.isInteger(failTimes)) throw new Reject('`fail_times` must be a number');
      if (attempt <= failTimes) {
        throw new Error(`attempt ${attempt} of a task set to fail ${failTimes} time(s)`);
      }
      return `succeeded on attempt ${attempt}`;
    },
  },
  'js.fanout': {
    description: 'Enqueues js.greet for each of `names`, unique per name, linked to js.echo',
    run: ({ names = [] }) =>
      names.map((name) => {
        const done = enqueue('js.greet', { name }, { unique: { ttlMs: 60000 }, link: 'js.echo' });
        return [done.id, done.duplicate];
      }),
  },
});
