// The `hello` example in JavaScript: hello.greet, hello.echo, hello.flaky —
// the same tasks as plugins/hello (Rust), c/ and python/, to compare.
//
// Build:  xylem plugin build plugins/javascript   (runs `npm install` here first)
import { plugin, Reject, log } from './xylem.js';

export const handler = plugin({
  'hello.greet': {
    description: 'Returns a greeting for `name`',
    run({ name }) {
      if (typeof name !== 'string' || !name.trim()) {
        throw new Reject('`name` must be a non-empty string');
      }
      log(`greeting ${name}`);
      return `Hello, ${name}!`;
    },
  },
  'hello.echo': {
    description: 'Returns its arguments unchanged',
    run: (args) => args,
  },
  'hello.flaky': {
    description: 'Fails its first `fail_times` attempts, then succeeds',
    options: { maxRetries: 5 },
    run({ fail_times: failTimes }, { attempt }) {
      if (!Number.isInteger(failTimes)) throw new Reject('`fail_times` must be a number');
      if (attempt <= failTimes) {
        throw new Error(`attempt ${attempt} of a task set to fail ${failTimes} time(s)`);
      }
      return `succeeded on attempt ${attempt}`;
    },
  },
});
