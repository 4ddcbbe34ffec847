// The process allocator of the `weir` binary. Kept in this one file so the
// memory benchmark (state/benches/memory.rs, which `include!`s it) measures
// exactly what the binary runs with.

/// jemalloc for every allocation in the process, RocksDB's and librdkafka's
/// included (unprefixed `malloc`). Measured (state/benches/memory.rs): with
/// glibc's allocator a dedup store's process grew from 47 MiB at 1,000,000
/// keys to 82 MiB at 10,000,000 (1.73×), 25 MiB of it freed compaction
/// memory the heap kept; with jemalloc and the settings below, 48 → 49 MiB.
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
/// 169–194k at three (alternating runs). Store RSS (state/benches/memory.rs):
/// 35 → 43 MiB at 1 M → 10 M keys at one second, 44 → 46 and 48 → 49 MiB
/// (two runs) at three, 66 → 85 MiB at ten. `MALLOC_CONF` in the
/// environment overrides these.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &[u8; 63] = b"background_thread:true,dirty_decay_ms:3000,muzzy_decay_ms:3000\0";
