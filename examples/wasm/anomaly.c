/* Moving-average anomaly detector.
 *
 * input:  {"values": [..], "window": 8, "threshold": 3.0}
 * output: {"count": n, "anomalies": [{"index": i, "value": v, "score": z}, ...]}
 *
 * A value is an anomaly when it is more than `threshold` standard deviations from the mean of
 * the `window` values before it. */
#include <math.h>
#include "values.h"

int main(void) {
  size_t len;
  char *in = read_stdin(&len);
  if (!in) { fputs("out of memory reading the input\n", stderr); return 2; }
  double *v;
  long n = read_numbers(in, "values", &v);
  if (n < 0) { fputs("the input has no \"values\" array of numbers\n", stderr); return 1; }
  long window = (long)read_number(in, "window", 8);
  double threshold = read_number(in, "threshold", 3.0);
  if (window < 2) window = 2;
  printf("{\"count\":%ld,\"anomalies\":[", n);
  int first = 1;
  for (long i = window; i < n; i++) {
    double sum = 0, sq = 0;
    for (long j = i - window; j < i; j++) { sum += v[j]; sq += v[j] * v[j]; }
    double mean = sum / window;
    double var = sq / window - mean * mean;
    double sd = var > 0 ? sqrt(var) : 0;
    double z = sd > 0 ? (v[i] - mean) / sd : (v[i] == mean ? 0 : INFINITY);
    if (fabs(z) > threshold) {
      printf("%s{\"index\":%ld,\"value\":", first ? "" : ",", i);
      print_number(v[i]);
      printf(",\"score\":%.6g}", isinf(z) ? 1e308 : z);
      first = 0;
    }
  }
  puts("]}");
  return 0;
}
