/* A JSON transform: each value scaled and shifted, with a summary.
 *
 * args:   [factor, offset] (default 1 and 0), e.g. ["1.8", "32"] for Celsius to Fahrenheit
 * input:  {"values": [..]}
 * output: {"count": n, "min": a, "max": b, "sum": s, "values": [v * factor + offset, ...]} */
#include "values.h"

int main(int argc, char **argv) {
  double factor = argc > 1 ? strtod(argv[1], NULL) : 1.0;
  double offset = argc > 2 ? strtod(argv[2], NULL) : 0.0;
  size_t len;
  char *in = read_stdin(&len);
  if (!in) { fputs("out of memory reading the input\n", stderr); return 2; }
  double *v;
  long n = read_numbers(in, "values", &v);
  if (n < 0) { fputs("the input has no \"values\" array of numbers\n", stderr); return 1; }
  double sum = 0, lo = 0, hi = 0;
  for (long i = 0; i < n; i++) {
    v[i] = v[i] * factor + offset;
    sum += v[i];
    if (i == 0 || v[i] < lo) lo = v[i];
    if (i == 0 || v[i] > hi) hi = v[i];
  }
  printf("{\"count\":%ld,\"min\":", n);
  print_number(lo);
  fputs(",\"max\":", stdout);
  print_number(hi);
  fputs(",\"sum\":", stdout);
  print_number(sum);
  fputs(",\"values\":[", stdout);
  for (long i = 0; i < n; i++) {
    if (i) putchar(',');
    print_number(v[i]);
  }
  puts("]}");
  return 0;
}
