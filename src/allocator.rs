// The process allocator of the `weir` binary. Kept in this one file so the
// memory benchmark (state/benches/memory.rs, which `include!`s it) measures
// exactly what the binary runs with.

/// jemalloc for every allocation in the process, RocksDB's and librdkafka's
/// included (unprefixed `malloc`). Measured (state/benches/memory.rs): with
/// glibc's allocator a dedup store's process grew from 47 MiB at 1,000,000
/// keys to 82 MiB at 10,000,000 (1.73×), 25 MiB of it freed compaction
/// memory the heap kept; with jemalloc and the settings below, 38 → 46 MiB.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread hands freed pages back to the
/// OS after a second (the default keeps them ten seconds and only purges
/// on allocation), so RSS follows what is live.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &[u8; 63] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";
