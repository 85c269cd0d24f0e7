//! The composition root: open the store, start the writer, serve both listeners, drain.

use crate::config::Config;
use crate::fanout::dispatcher::Dispatcher;
use crate::fanout::feed::Feed;
use crate::http::api::{self, ApiState};
use crate::http::health::Health;
use crate::http::ingest::{self, IngestState};
use crate::http::serve;
use crate::ingest::writer::Writer;
use crate::store::{self, Store, StoreOptions};
use anyhow::Context;
use axum::serve::ListenerExt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The two bound sockets: `main` binds the configured addresses, tests bind port 0.
pub struct Listeners {
    pub ingest: TcpListener,
    pub api: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let ingest = listen(config.ingest.listen)
            .with_context(|| format!("cannot listen on ingest.listen {}", config.ingest.listen))?;
        let api = listen(config.api.listen)
            .with_context(|| format!("cannot listen on api.listen {}", config.api.listen))?;
        Ok(Self { ingest, api })
    }
}

/// Accepted-connection queue per listener: clients reconnecting together after a restart
/// (thousands of streams and waiters) would overflow the default of 128 and wait for SYN
/// retransmits.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Opens and migrates the configured store.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let options = StoreOptions {
        max_connections: config.database.max_connections,
        busy_timeout: config.database.busy_timeout,
    };
    let store = store::open(&config.database.url, &options)
        .await
        .context("cannot open the database named by database.url")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// Runs the daemon until `shutdown` is cancelled, then stops accepting, lets in-flight
/// requests finish, and commits everything the writer had accepted before returning.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Before anything resolves a metric handle: handles taken earlier would record nowhere.
    crate::metrics::install();
    let store = open_store(&config).await?;
    let last_seq = store
        .last_seq()
        .await
        .context("cannot read the event log")?;
    let (writer, handle) = Writer::new(
        store.clone(),
        config.ingest.queue_capacity,
        config.ingest.batch_max_events,
        last_seq,
    );
    let committed = handle.committed();
    let writer_task = writer
        .spawn(store.append_blocks())
        .context("cannot start the writer")?;
    let (feed, feed_handle) = Feed::new(store.clone(), last_seq, config.api.stream_buffer);
    let remote_commits = Arc::new(Notify::new());
    let workers = CancellationToken::new();
    let feed_task = tokio::spawn(feed.run(committed, remote_commits.clone(), workers.clone()));
    let maintain_task = tokio::spawn({
        let (store, cancel) = (store.clone(), workers.clone());
        async move {
            let mut tick = tokio::time::interval(crate::store::MAINTAIN_EVERY);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(err) = store.maintain().await {
                    tracing::warn!(error = %err, "database upkeep failed; will retry");
                }
            }
            // One last checkpoint, so a stopped relay leaves a short WAL behind.
            let _ = store.maintain().await;
        }
    });
    let retention_task = tokio::spawn(
        crate::upkeep::Retention::new(store.clone(), config.retention.clone()).run(workers.clone()),
    );
    let listen_store = store.clone();
    let listen_cancel = workers.clone();
    let listen_task = tokio::spawn(async move {
        if let Err(err) = listen_store
            .listen_commits(remote_commits, listen_cancel)
            .await
        {
            tracing::error!(error = %err, "cannot listen for other replicas' commits");
        }
    });

    if config.ingest_is_open() {
        tracing::warn!(
            "webhook.allow_unauthenticated is set and no secret is configured: anyone who can \
             reach the ingest port can store events"
        );
    }
    let health = Health {
        store: store.clone(),
        writer: handle.clone(),
    };
    let ingest_router = ingest::router(
        Arc::new(IngestState::from_config(&config, handle.clone())),
        health.clone(),
    );
    crate::fanout::subscriptions::sync_config(store.as_ref(), &config.subscriptions)
        .await
        .context("cannot store the configured subscriptions")?;
    let dispatcher = Arc::new(
        Dispatcher::new(store.clone(), config.delivery.clone())
            .context("cannot build the outbound HTTP client")?,
    );
    let dispatcher_task = tokio::spawn(dispatcher.clone().run(handle.queued(), workers.clone()));
    let (polling, poller_task) = start_poller(&config, store.clone(), handle, shutdown.clone())?;
    let mut api_state = ApiState::from_config(
        &config,
        store.clone(),
        feed_handle,
        shutdown.clone(),
        dispatcher.waker(),
    );
    api_state.polling = polling;
    let api_router = api::router(Arc::new(api_state), health);

    tracing::info!(
        ingest = %listeners.ingest.local_addr()?,
        api = %listeners.api.local_addr()?,
        database = store.backend(),
        last_seq,
        "mkio-relay serving"
    );
    let ingest_server = axum::serve(listeners.ingest.tap_io(serve::no_delay), ingest_router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Its own server: thousands of waits and streams held open must stay light.
    let api_server = serve::serve(listeners.api, api_router, shutdown.clone());
    let drain = async {
        let (ingest_result, api_result) = tokio::join!(ingest_server, api_server);
        // A server that failed takes the other down too.
        shutdown.cancel();
        if let Some(task) = poller_task {
            task.await.context("the poller panicked")?;
        }
        // Every writer handle lived in the routers and the poller, now dropped: the writer
        // drains and exits.
        writer_task.await.context("the writer stopped abnormally")?;
        workers.cancel();
        feed_task.await.context("the feed task panicked")?;
        dispatcher_task.await.context("the dispatcher panicked")?;
        listen_task.await.context("the commit listener panicked")?;
        maintain_task.await.context("the upkeep task panicked")?;
        retention_task
            .await
            .context("the retention task panicked")?;
        ingest_result.context("ingest listener failed")?;
        api_result.context("API listener failed")?;
        anyhow::Ok(())
    };
    // The grace period starts at the signal: what still runs when it ends is abandoned. An
    // event is acknowledged only after its commit, so nothing acknowledged is abandoned.
    let grace = config.shutdown.grace;
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = drain => result?,
        () = deadline => {
            workers.cancel();
            anyhow::bail!(
                "shutdown.grace ({}) elapsed with requests or workers still running; \
                 abandoned them (every acknowledged event was already committed)",
                humantime::format_duration(grace)
            );
        }
    }
    tracing::info!("mkio-relay stopped");
    Ok(())
}

/// Starts polling MK.IO when it is configured (a token, projects, `poll.enabled`): the managed
/// projects (empty when polling is off) and the poller's task.
fn start_poller(
    config: &Config,
    store: Arc<dyn crate::store::Store>,
    writer: crate::ingest::writer::WriterHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<(
    Arc<crate::poller::Projects>,
    Option<tokio::task::JoinHandle<()>>,
)> {
    use crate::poller::{source, Poller, Projects};
    if !config.poll.enabled || !config.mkio.is_configured() {
        tracing::info!(
            "polling MK.IO is off (it needs mkio.token, mkio.projects and poll.enabled); \
             only webhooks update state"
        );
        return Ok((Arc::default(), None));
    }
    let projects = Arc::new(Projects::new(&config.mkio.projects));
    // Building the client also warns when the token's expiry is near.
    let client =
        crate::mkio::MkioClient::new(&config.mkio).context("cannot build the MK.IO client")?;
    let mkio = Arc::new(source::Client {
        client,
        rule_name: config.mkio.rule_name.clone(),
    });
    let (get, write) = config.mkio.budget();
    tracing::info!(
        projects = ?config.mkio.projects,
        get_per_minute = get,
        write_per_minute = write,
        base_url = %config.mkio.base_url,
        "polling MK.IO"
    );
    let poller = Arc::new(Poller::new(
        store,
        mkio,
        writer,
        config.poll.clone(),
        config.mkio.rule_name.clone(),
        projects.clone(),
    ));
    Ok((projects, Some(tokio::spawn(poller.run(shutdown)))))
}
