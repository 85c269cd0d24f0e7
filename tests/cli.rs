//! The binary as a container runs it: configuration errors, `check-config`, `serve` with the
//! Dockerfile's environment, `healthcheck`, and a clean exit on SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mkio-relay");

/// A command with no MKIO_RELAY_* variables inherited from the test environment.
fn relay(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("MKIO_RELAY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn run(args: &[&str], env: &[(String, String)]) -> Output {
    relay(args, env).output().expect("run mkio-relay")
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `ENV` settings of the Dockerfile, so the test runs what the container runs.
fn dockerfile_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_settings_stop_start_up_with_one_line_naming_them() {
    for (var, value, needle) in [
        (
            "MKIO_RELAY_DATABASE_URL",
            "mysql://x",
            "MKIO_RELAY_DATABASE_URL",
        ),
        (
            "MKIO_RELAY_INGEST_LISTEN",
            "nowhere",
            "MKIO_RELAY_INGEST_LISTEN",
        ),
        ("MKIO_RELAY_API_LISTEN", "1.2.3", "MKIO_RELAY_API_LISTEN"),
    ] {
        let out = run(
            &["serve"],
            &vars(&[("MKIO_RELAY_WEBHOOK_SECRETS", "s"), (var, value)]),
        );
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let out = run(&["serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MKIO_RELAY_WEBHOOK_SECRETS"));
}

#[test]
fn check_config_accepts_the_container_environment_and_masks_secrets() {
    let mut env = dockerfile_env();
    assert!(
        env.iter().any(|(k, _)| k == "MKIO_RELAY_INGEST_LISTEN"),
        "{env:?}"
    );
    env.extend(vars(&[
        ("MKIO_RELAY_WEBHOOK_SECRETS", "hunter2"),
        ("MKIO_RELAY_API_TOKEN", "tok-secret"),
    ]));
    let out = run(&["check-config"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0.0.0.0:8080"), "{stdout}");
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("tok-secret"),
        "{stdout}"
    );
}

#[test]
fn container_entrypoint_serves_passes_healthcheck_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (ingest, api) = (free_port(), free_port());
    let mut env: Vec<(String, String)> = dockerfile_env()
        .into_iter()
        .map(|(k, v)| {
            let v = v.replace("/data", &data.path().display().to_string());
            let v = v.replace("0.0.0.0:8080", &format!("0.0.0.0:{ingest}"));
            (k, v.replace("0.0.0.0:8081", &format!("0.0.0.0:{api}")))
        })
        .collect();
    env.extend(vars(&[("MKIO_RELAY_WEBHOOK_SECRETS", "cli-secret-value")]));

    // Before the daemon runs, the health check fails.
    assert!(!run(&["healthcheck"], &env).status.success());

    let mut child = relay(&["serve"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run(&["healthcheck"], &env).status.success() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited during start-up"
        );
        assert!(
            Instant::now() < deadline,
            "healthcheck did not pass within 20s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(data.path().join("mkio-relay.db").exists());

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 20s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    // JSON logs, as the container sets.
    assert!(stderr.lines().all(|l| l.starts_with('{')), "{stderr}");
    assert!(
        !stderr.contains("cli-secret-value"),
        "the secret is never logged: {stderr}"
    );
}
