/* Reading the task's input: the numbers of its "values" array, from stdin.
 * Enough JSON for these examples (a real module would use a JSON library such as cJSON). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole of stdin, NUL-terminated (NULL when it does not fit in memory). */
static char *read_stdin(size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  if (!buf) return NULL;
  for (;;) {
    size_t got = fread(buf + n, 1, cap - n - 1, stdin);
    n += got;
    if (got == 0) break;
    if (n + 1 == cap) {
      char *more = realloc(buf, cap * 2);
      if (!more) { free(buf); return NULL; }
      buf = more;
      cap *= 2;
    }
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

/* The numbers of `"key": [ ... ]` in `json`, into a new array; -1 when it is not there. */
static long read_numbers(const char *json, const char *key, double **out) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  if (!p) return -1;
  p = strchr(p + strlen(pattern), '[');
  if (!p) return -1;
  p++;
  long n = 0, cap = 256;
  double *v = malloc(cap * sizeof *v);
  if (!v) return -1;
  for (;;) {
    while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    if (*p == ']' || *p == 0) break;
    char *end;
    double x = strtod(p, &end);
    if (end == p) { free(v); return -1; }
    if (n == cap) {
      double *more = realloc(v, (size_t)cap * 2 * sizeof *v);
      if (!more) { free(v); return -1; }
      v = more;
      cap *= 2;
    }
    v[n++] = x;
    p = end;
  }
  *out = v;
  return n;
}

/* A number field `"key": x` of `json`, or `dflt`. */
static double read_number(const char *json, const char *key, double dflt) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  if (!p) return dflt;
  p = strchr(p + strlen(pattern), ':');
  if (!p) return dflt;
  char *end;
  double x = strtod(p + 1, &end);
  return end == p + 1 ? dflt : x;
}

/* `x` as the shortest of %.15g / %.16g / %.17g that reads back as the same double. */
static void print_number(double x) {
  char buf[32];
  for (int digits = 15; digits <= 17; digits++) {
    snprintf(buf, sizeof buf, "%.*g", digits, x);
    if (strtod(buf, NULL) == x) break;
  }
  fputs(buf, stdout);
}
