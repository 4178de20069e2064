"""diskcache's side of the eviction harness's put-over-quota workload (src/bin/eviction.rs).

usage: diskcache_put_over_quota.py DIR VALUE_BYTES QUOTA_BYTES TIMED_PUTS CHECK_EVERY

Opens diskcache.Cache(DIR, size_limit=QUOTA_BYTES) with its defaults otherwise (cull_limit 10,
eviction policy least-recently-stored, values >= 32 KiB in files), stores distinct random values
of VALUE_BYTES under new keys until they add up to the quota, then times TIMED_PUTS more
`cache.set` calls one by one. Every CHECK_EVERY-th put it checks, untimed, that the key just
written is still there and samples the volume. Prints one line of `name=value` pairs.
"""

import os
import sys
import time

import diskcache


def main():
    directory, value_bytes, quota, timed, check_every = sys.argv[1:6]
    value_bytes, quota, timed, check_every = (
        int(value_bytes),
        int(quota),
        int(timed),
        int(check_every),
    )
    cache = diskcache.Cache(directory, size_limit=quota)
    base = os.urandom(value_bytes)
    counter = 0

    def value(i):
        # Distinct content per key, like the Rust side's stamp().
        return i.to_bytes(8, "little") + base[8:]

    # Fill by count: diskcache culls inside set(), so its volume may never reach the quota.
    while counter * value_bytes < quota:
        cache.set("k%d" % counter, value(counter))
        counter += 1
    filled = len(cache)
    latencies = []
    lost_own = 0
    checks = 0
    max_volume = cache.volume()
    for _ in range(timed):
        key = "k%d" % counter
        v = value(counter)
        start = time.perf_counter_ns()
        cache.set(key, v)
        latencies.append(time.perf_counter_ns() - start)
        counter += 1
        if counter % check_every == 0:
            checks += 1
            if key not in cache:
                lost_own += 1
            max_volume = max(max_volume, cache.volume())
    final_volume = cache.volume()
    final_len = len(cache)
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000.0

    evictions = filled + timed - final_len
    print(
        "version=%s fill_entries=%d p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "
        "evictions=%d max_volume=%d final_volume=%d checks=%d lost_own=%d"
        % (
            diskcache.__version__,
            filled,
            pct(0.50),
            pct(0.99),
            pct(0.999),
            latencies[-1] / 1000.0,
            evictions,
            max_volume,
            final_volume,
            checks,
            lost_own,
        )
    )
    cache.close()


if __name__ == "__main__":
    main()
