// The `hello` example in C: c.greet, c.echo, c.flaky — the same tasks as
// plugins/hello (Rust: hello.*), python/ (py.*) and javascript/ (js.*), under
// names of their own so that all four can be pushed side by side.
// Bindings: gen/, made by `make bindings` (wit-bindgen c).
// Ownership (canonical ABI): the arguments are ours to free; what we return
// must be malloc'd, the generated post-return functions free it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gen/plugin.h"

static plugin_string_t str(const char *s) {
  plugin_string_t r;
  plugin_string_dup(&r, s);
  return r;
}

static plugin_option_string_t some(const char *s) {
  plugin_option_string_t o = {.is_some = true};
  plugin_string_dup(&o.val, s);
  return o;
}

static xylem_task_types_task_spec_t spec(const char *name, const char *desc) {
  xylem_task_types_task_spec_t t;
  memset(&t, 0, sizeof t); // every option unset
  t.name = str(name);
  t.description = some(desc);
  return t;
}

void exports_xylem_task_handler_describe(exports_xylem_task_handler_list_task_spec_t *ret) {
  ret->len = 3;
  ret->ptr = malloc(3 * sizeof *ret->ptr);
  ret->ptr[0] = spec("c.greet", "Returns a greeting for `name`");
  ret->ptr[1] = spec("c.echo", "Returns its arguments unchanged");
  ret->ptr[2] = spec("c.flaky", "Fails its first `fail_times` attempts, then succeeds");
  ret->ptr[2].options.max_retries = (plugin_option_u32_t){.is_some = true, .val = 5};
}

// Finds `"key":` in a JSON object (naively: no nesting awareness) and returns
// a pointer to the first byte of its value, or NULL.
static const char *find_key(const char *json, const char *key) {
  size_t klen = strlen(key);
  for (const char *p = json; (p = strchr(p, '"')) != NULL; p++) {
    if (strncmp(p + 1, key, klen) == 0 && p[1 + klen] == '"') {
      const char *q = p + 2 + klen;
      while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
      if (*q != ':') continue;
      q++;
      while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
      return q;
    }
  }
  return NULL;
}

// Copies the JSON string value at `v` (which starts with '"'), escapes kept
// as they are, into a malloc'd buffer. NULL if `v` is not a string.
static char *json_string_raw(const char *v) {
  if (v == NULL || *v != '"') return NULL;
  const char *end = v + 1;
  while (*end && *end != '"') end += (*end == '\\' && end[1]) ? 2 : 1;
  if (*end != '"') return NULL;
  size_t n = (size_t)(end - v - 1);
  char *out = malloc(n + 1);
  memcpy(out, v + 1, n);
  out[n] = 0;
  return out;
}

static bool fail_with(exports_xylem_task_handler_task_error_t *err, uint8_t tag, const char *msg) {
  err->tag = tag;
  if (tag == XYLEM_TASK_TYPES_TASK_ERROR_FAIL) err->val.fail = str(msg);
  else err->val.reject = str(msg);
  return false;
}

static bool greet(const char *args, plugin_string_t *ret, exports_xylem_task_handler_task_error_t *err) {
  char *name = json_string_raw(find_key(args, "name"));
  if (name == NULL || name[strspn(name, " \t")] == 0) {
    free(name);
    return fail_with(err, XYLEM_TASK_TYPES_TASK_ERROR_REJECT, "`name` must be a non-empty string");
  }
  size_t n = strlen(name) + 32;
  char *msg = malloc(n);
  snprintf(msg, n, "greeting %s", name);
  plugin_string_t line = {(uint8_t *)msg, strlen(msg)};
  xylem_task_host_log(XYLEM_TASK_TYPES_LEVEL_INFO, &line);
  // The result is JSON: a string, so quoted (the name keeps its escapes).
  snprintf(msg, n, "\"Hello, %s!\"", name);
  ret->ptr = (uint8_t *)msg;
  ret->len = strlen(msg);
  free(name);
  return true;
}

static bool flaky(uint32_t attempt, const char *args, plugin_string_t *ret,
                  exports_xylem_task_handler_task_error_t *err) {
  const char *v = find_key(args, "fail_times");
  if (v == NULL || *v < '0' || *v > '9')
    return fail_with(err, XYLEM_TASK_TYPES_TASK_ERROR_REJECT, "`fail_times` must be a number");
  unsigned long fail_times = strtoul(v, NULL, 10);
  char buf[96];
  if (attempt <= fail_times) {
    snprintf(buf, sizeof buf, "attempt %u of a task set to fail %lu time(s)", attempt, fail_times);
    return fail_with(err, XYLEM_TASK_TYPES_TASK_ERROR_FAIL, buf);
  }
  snprintf(buf, sizeof buf, "\"succeeded on attempt %u\"", attempt);
  *ret = str(buf);
  return true;
}

bool exports_xylem_task_handler_run(exports_xylem_task_handler_task_info_t *info, plugin_string_t *args,
                                    plugin_string_t *ret, exports_xylem_task_handler_task_error_t *err) {
  // NUL-terminated copies, so the helpers above can use C string functions.
  char *name = strndup((const char *)info->name.ptr, info->name.len);
  char *json = strndup((const char *)args->ptr, args->len);
  bool ok;
  if (strcmp(name, "c.greet") == 0) {
    ok = greet(json, ret, err);
  } else if (strcmp(name, "c.echo") == 0) {
    ok = true;
    *ret = *args; // hand the argument buffer back as the result: no copy
    args->ptr = NULL;
    args->len = 0;
  } else if (strcmp(name, "c.flaky") == 0) {
    ok = flaky(info->attempt, json, ret, err);
  } else {
    char buf[160];
    snprintf(buf, sizeof buf, "this plugin has no task named `%s` (it has: c.greet, c.echo, c.flaky)", name);
    ok = fail_with(err, XYLEM_TASK_TYPES_TASK_ERROR_REJECT, buf);
  }
  free(name);
  free(json);
  exports_xylem_task_handler_task_info_free(info);
  plugin_string_free(args);
  return ok;
}
