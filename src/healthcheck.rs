//! `mkio-relay healthcheck`: asks the local daemon's `/readyz` (for a container HEALTHCHECK,
//! where no curl is installed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole check may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The address to reach a listener bound to `listen` from the same host.
fn local_target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// GETs `/readyz` on the listener at `listen`; Ok when it answers 200.
pub async fn check(listen: SocketAddr) -> anyhow::Result<()> {
    let target = local_target(listen);
    let status_line = tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(target).await?;
        let request =
            format!("GET /readyz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response);
        Ok::<_, std::io::Error>(text.lines().next().unwrap_or("").to_owned())
    })
    .await
    .map_err(|_| anyhow::anyhow!("{target} did not answer within {TIMEOUT:?}"))?
    .map_err(|e| anyhow::anyhow!("cannot reach {target}: {e}"))?;
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        anyhow::bail!("{target}/readyz answered {status_line:?}")
    }
}
