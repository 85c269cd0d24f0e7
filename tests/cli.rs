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

/// The settings a `rules` command needs besides the one a test leaves out.
fn rules_env(without: &str, base_url: &str) -> Vec<(String, String)> {
    let all = [
        ("MKIO_RELAY_WEBHOOK_SECRETS", "rule-secret-value"),
        ("MKIO_RELAY_MKIO_BASE_URL", base_url),
        ("MKIO_RELAY_MKIO_TOKEN", "cli-token-value"),
        ("MKIO_RELAY_MKIO_PROJECTS", "studio-prod,archive"),
        (
            "MKIO_RELAY_MKIO_RULE_URL",
            "https://relay.example.com/webhooks/mkio",
        ),
        ("MKIO_RELAY_LOG_FORMAT", "json"),
    ];
    vars(
        &all.into_iter()
            .filter(|(k, _)| *k != without)
            .collect::<Vec<_>>(),
    )
}

#[test]
fn rules_commands_name_the_missing_setting_and_fail() {
    let unused = "http://127.0.0.1:9";
    for (args, without, needle) in [
        (
            &["rules", "apply"][..],
            "MKIO_RELAY_MKIO_TOKEN",
            "MKIO_RELAY_MKIO_TOKEN",
        ),
        (
            &["rules", "show"][..],
            "MKIO_RELAY_MKIO_TOKEN",
            "MKIO_RELAY_MKIO_TOKEN",
        ),
        (
            &["rules", "history", "--project", "p"][..],
            "MKIO_RELAY_MKIO_TOKEN",
            "MKIO_RELAY_MKIO_TOKEN",
        ),
        (
            &["rules", "apply"][..],
            "MKIO_RELAY_MKIO_PROJECTS",
            "MKIO_RELAY_MKIO_PROJECTS",
        ),
        (
            &["rules", "apply"][..],
            "MKIO_RELAY_MKIO_RULE_URL",
            "MKIO_RELAY_MKIO_RULE_URL",
        ),
    ] {
        let out = run(args, &rules_env(without, unused));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} without {without}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // No webhook secret: only possible when ingest is explicitly open.
    let mut env = rules_env("MKIO_RELAY_WEBHOOK_SECRETS", unused);
    env.extend(vars(&[(
        "MKIO_RELAY_WEBHOOK_ALLOW_UNAUTHENTICATED",
        "true",
    )]));
    let out = run(&["rules", "apply"], &env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("webhook.secrets"), "{stderr}");
}

/// A mock MK.IO answering 201 to the first PUT of each rule and 200 afterwards, and 404 to
/// every read in the `archive` project.
fn start_mock_mkio() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::StatusCode;
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let log = seen.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let log = log.clone();
                async move {
                    let line = format!("{} {}", req.method(), req.uri());
                    let mut log = log.lock().unwrap();
                    let again = log.contains(&line);
                    log.push(line);
                    match (req.method().as_str(), req.uri().path()) {
                        ("PUT", _) if again => (StatusCode::OK, "{}".to_owned()),
                        ("PUT", _) => (StatusCode::CREATED, "{}".to_owned()),
                        (_, p) if p.contains("/archive/") => (
                            StatusCode::NOT_FOUND,
                            r#"{"error":{"code":"NotFound","detail":"no rule"},"status":404,"ref":"ref-404"}"#.to_owned(),
                        ),
                        (_, p) if p.ends_with("/events") => (
                            StatusCode::OK,
                            r#"{"value":[{"created":"2025-03-14T09:09:48Z","source":"/api/v1/projects/studio-prod/media/transforms/t/jobs/j1","type":"MediaKind.JobFinished","status":"Failed"}]}"#.to_owned(),
                        ),
                        _ => (
                            StatusCode::OK,
                            r#"{"metadata":{"name":"mkio-relay"},"spec":{"enabled":true}}"#.to_owned(),
                        ),
                    }
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (base, seen)
}

#[test]
fn rules_apply_show_and_history_against_a_mock_mkio() {
    let (base, seen) = start_mock_mkio();
    let env = rules_env("", &base);

    let out = run(&["rules", "apply"], &env);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("studio-prod: rule mkio-relay created (201)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("archive: rule mkio-relay created (201)"),
        "{stdout}"
    );
    let out = run(&["rules", "apply", "--project", "studio-prod"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("studio-prod: rule mkio-relay replaced (200)"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let out = run(&["rules", "show"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("\"enabled\": true"), "{stdout}");
    assert!(
        stdout.contains("archive: no rule named mkio-relay"),
        "{stdout}"
    );

    let out = run(&["rules", "history", "--project", "studio-prod"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("MediaKind.JobFinished"), "{stdout}");
    assert!(stdout.contains("summary: Failed: 1"), "{stdout}");

    // A project whose history cannot be read makes the command fail, naming MK.IO's ref.
    let out = run(&["rules", "history", "--project", "archive"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ref-404"), "{stderr}");
    assert!(!stderr.contains("cli-token-value") && !stderr.contains("rule-secret-value"));
    // Two PUTs, one PUT, two GETs, one history each for two projects; the 404 is not retried.
    assert_eq!(seen.lock().unwrap().len(), 7);
}
