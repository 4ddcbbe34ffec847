// The process allocator of the `weir` binary. Kept in this one file so the
// CPU benchmark (benches/inventory_core.rs, which `include!`s it) runs with
// exactly what the binary runs with; `weir bench --steps memory` measures
// store memory in `weir` processes.

/// jemalloc for every allocation in the process, RocksDB's and librdkafka's
/// included (unprefixed `malloc`). Measured (the store memory benchmark,
/// now `weir bench --steps memory`): with glibc's allocator a dedup store's
/// process grew from 47 MiB at 1,000,000 keys to 82 MiB at 10,000,000
/// (1.73×), 25 MiB of it freed compaction memory the heap kept; with
/// jemalloc and the settings below, 48 → 49 MiB.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread hands freed pages back to the
/// OS after three seconds (the default keeps them ten seconds and only
/// purges on allocation), so RSS follows what is live.
///
/// Why three, not one: every purge is an `madvise` that flushes the TLBs of
/// the other cores, and the pages come back as page faults when reused. At
/// one second the purging thread took ~1.8 s of CPU per 1.21 M-record
/// `weir bench` run (at three: ~1.2 s); with two stream threads on two
/// cores, at-least-once did 157–169k records/s at one second and
/// 169–194k at three (alternating runs). Store RSS (the same benchmark):
/// 35 → 43 MiB at 1 M → 10 M keys at one second, 44 → 46 and 48 → 49 MiB
/// (two runs) at three, 66 → 85 MiB at ten. `MALLOC_CONF` in the
/// environment overrides these.
///
/// Why no muzzy stage (`muzzy_decay_ms:0`): with one, a purged page was
/// first `MADV_FREE`d and three seconds later `MADV_DONTNEED`ed, two TLB
/// shootdowns instead of one, and `MADV_FREE`d pages still count in RSS
/// until the kernel wants them. The purging thread was 5% of the process's
/// samples (perf, at-least-once, two stream threads, embedded broker), most
/// of it in the shootdowns' IPIs. Measured without it, three alternating
/// `weir bench --steps alo,eos --stream-threads 2` runs each: steady
/// at-least-once 374–426k records/s against 361–399k, exactly-once
/// 357–409k against 363–381k, the benchmark's peak RSS 1.19–1.21 GB
/// against 1.26–1.29 GB; store RSS (the same benchmark) 36–39 MiB at
/// 1 M keys, 43–47 MiB at 10 M.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:3000,muzzy_decay_ms:0\0";
