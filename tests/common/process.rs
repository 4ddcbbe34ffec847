//! Fixtures for tests that run `weir` as separate processes: spawning,
//! signals, HTTP GETs and reading the Prometheus exposition.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `weir` binary with a quiet log filter.
pub fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env("WEIR_LOG", "info,rdkafka=warn");
    c
}

/// Kills the child on drop, so a failing test leaves no process behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().unwrap()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET a path; returns (status code, body). `None` while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// POST a JSON body with extra headers; returns (status code, body).
pub fn http_post(port: u16, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("server listens");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body; ignore the broken pipe.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The value of one sample line of the Prometheus exposition.
pub fn metric(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Starts `weir broker` and returns it with its bootstrap list.
pub fn broker(extra: &[&str]) -> (Proc, String) {
    let mut child = weir()
        .arg("broker")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let bootstrap = first
        .trim()
        .strip_prefix("bootstrap.servers=")
        .unwrap_or_else(|| panic!("first line should be bootstrap.servers=…, got {first:?}"))
        .to_string();
    (Proc(child), bootstrap)
}

/// `weir run --brokers <b>` as a process, at-least-once (the embedded
/// broker cannot store transactional offset commits), with quick commits,
/// its state in `state_dir` and metrics on `metrics_port` (0: any).
pub fn job_process(brokers: &str, state_dir: &std::path::Path, metrics_port: u16) -> Proc {
    job_process_with(brokers, state_dir, metrics_port, "at-least-once", None)
}

/// [`job_process`] with a chosen guarantee. Exactly-once records are
/// stamped with `weir.run`/`weir.txn` (`--provenance-headers always`): the
/// crash tests' checker reads them to tell an unfinished transaction's
/// records on a broker that shows them.
pub fn job_process_with(
    brokers: &str,
    state_dir: &std::path::Path,
    metrics_port: u16,
    guarantee: &str,
    log: Option<&std::path::Path>,
) -> Proc {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    Proc(
        weir()
            .args(["run", "--brokers", brokers, "--commit-interval-ms", "100"])
            .args(["--guarantee", guarantee])
            .args(provenance_args(guarantee))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--state-dir", state_dir.to_str().unwrap()])
            .args(["-X", "consumer.session.timeout.ms=6000"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// `--provenance-headers always` under exactly-once (see
/// [`job_process_with`]); nothing, so the default, otherwise.
pub fn provenance_args(guarantee: &str) -> &'static [&'static str] {
    if guarantee == "exactly-once" {
        &["--provenance-headers", "always"]
    } else {
        &[]
    }
}

/// Runs a command to completion, asserting success; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A nisshi broker (durable, transactional) on a free loopback port, its
/// sqlite data in `dir`. The test command installs nisshi (scripts/nisshi.sh).
pub fn nisshi(dir: &std::path::Path) -> (Proc, String) {
    nisshi_on(dir, free_port())
}

/// [`nisshi`] on a given port (to restart it where clients expect it).
pub fn nisshi_on(dir: &std::path::Path, port: u16) -> (Proc, String) {
    let bin =
        std::env::var("WEIR_NISSHI").unwrap_or_else(|_| "/var/cache/weir-tools/bin/nisshi".into());
    assert!(
        std::path::Path::new(&bin).is_file(),
        "nisshi not found at {bin}: run scripts/test.sh (it installs nisshi)"
    );
    let url = format!("tcp://127.0.0.1:{port}");
    let proc = Proc(
        Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                "sqlite://nisshi.db",
                "--group-initial-rebalance-delay",
                "0s",
                "--silent",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nisshi did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, format!("127.0.0.1:{port}"))
}

/// Waits until `/ready` on `port` answers 200.
pub fn wait_ready(port: u16, job: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while http_get(port, "/ready").map(|(c, _)| c) != Some(200) {
        assert!(
            job.0.try_wait().unwrap().is_none(),
            "the job exited before it was ready"
        );
        assert!(
            Instant::now() < deadline,
            "the job was not ready within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `run=` id of the last producer a job started (a fenced producer is
/// replaced by a new run).
pub fn logged_run_id(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .rev()
        .filter(|l| l.contains("producer ready"))
        .find_map(|l| field(l, "run"))
        .unwrap_or_else(|| panic!("no run id in {}:\n{text}", log.display()))
}

/// The (run, txn) pairs a job logged as aborted.
pub fn logged_aborts(log: &std::path::Path) -> std::collections::BTreeSet<(String, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("transaction aborted"))
        .filter_map(|l| Some((field(l, "run")?, field(l, "txn")?.parse().ok()?)))
        .collect()
}

/// The value of `name=value` in a log line.
fn field(line: &str, name: &str) -> Option<String> {
    let v = line
        .split(&format!("{name}="))
        .nth(1)?
        .split_whitespace()
        .next()?;
    Some(v.trim_matches('"').to_string())
}
