//! What the benchmark programs share: the daemon as a child process stopped by its PID,
//! free ports, readiness, and CPU and memory read from /proc.
#![allow(dead_code)]

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::time::sleep;

pub const READY_PATH: &str = "/readyz";
/// How long a started daemon may take to answer `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const READY_POLL: Duration = Duration::from_millis(50);
/// How long a child gets after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// USER_HZ: /proc's CPU times are in these ticks.
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// A server child process, stopped by its PID (SIGTERM, then SIGKILL) when dropped, so an
/// error anywhere in the benchmark never leaves it running.
pub struct ChildGuard {
    pub label: String,
    pub child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(label: &str, mut cmd: Command) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {label}: {cmd:?}"))?;
        Ok(Self {
            label: label.into(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// An error when the child has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited early with {status}", self.label);
            }
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Graceful first: the daemon drains its writer, answers waiters, ends streams.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(READY_POLL);
        }
        eprintln!("{} ignored SIGTERM; killing it", self.label);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port; a tiny race with other programs until the child binds it.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Polls `GET /readyz` until it answers 200, the child exits, or [`READY_TIMEOUT`] passes.
pub async fn wait_ready(server: &mut ChildGuard, addr: SocketAddr) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(READY_POLL * 20)
        .build()?;
    let url = format!("http://{addr}{READY_PATH}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        server.check_alive()?;
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer {url} with 200 within {READY_TIMEOUT:?}",
                server.label
            );
        }
        sleep(READY_POLL).await;
    }
}

/// Resident memory of a process from /proc/PID/status, in KiB.
#[derive(Clone, Copy)]
pub struct Memory {
    pub peak_kib: u64,
    pub current_kib: u64,
}

impl Memory {
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Self {
            peak_kib: field("VmHWM:")?,
            current_kib: field("VmRSS:")?,
        })
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn cores(c: Option<f64>) -> String {
    c.map_or("n/a".into(), |c| format!("{c:.2}"))
}

/// User + system CPU seconds a process has used so far (all its threads).
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// Machine-wide CPU seconds so far, from /proc/stat: (busy, stolen by the hypervisor).
pub fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    Some((busy / CLOCK_TICKS_PER_SEC, at(7) / CLOCK_TICKS_PER_SEC))
}

/// Cores in use during a window.
pub struct CpuUse {
    pub server: Option<f64>,
    pub bench: Option<f64>,
    pub machine_busy: Option<f64>,
    pub machine_steal: Option<f64>,
}

impl CpuUse {
    pub fn sample(server_pid: &str) -> [Option<f64>; 4] {
        let machine = machine_cpu_seconds();
        [
            process_cpu_seconds(server_pid),
            process_cpu_seconds("self"),
            machine.map(|m| m.0),
            machine.map(|m| m.1),
        ]
    }

    pub fn between(before: [Option<f64>; 4], after: [Option<f64>; 4], secs: f64) -> Self {
        let cores = |i: usize| Some((after[i]? - before[i]?) / secs);
        Self {
            server: cores(0),
            bench: cores(1),
            machine_busy: cores(2),
            machine_steal: cores(3),
        }
    }
}
