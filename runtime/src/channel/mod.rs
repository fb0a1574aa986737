//! Channels: the last step of the invoke path, carrying a call to the proxy core in one wire
//! protocol over a bounded connection pool — to a named in-process listener (no socket), a TCP
//! address or a unix socket. Not for routing or upstream selection, which the proxy core does.

mod http;

use outrigger_config::{ChannelConfig, ChannelTarget, Protocol, RuntimeConfigSpec};

use crate::{invoke::InvokeService, metrics::Metrics, pool::http1::Dial, proxy::InProcess};

/// Idle channel connections are kept this long.
const CHANNEL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
/// Connect timeout for channels that dial a socket.
const CHANNEL_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Builds the channel service for one channel config.
pub(crate) async fn build(
    cfg: &ChannelConfig,
    spec: &RuntimeConfigSpec,
    in_process: &InProcess,
    metrics: &Metrics,
) -> Result<InvokeService, String> {
    let dial = match cfg.target(spec)? {
        ChannelTarget::Named(name) => Dial::InProcess {
            listeners: in_process.clone(),
            name,
        },
        ChannelTarget::Tcp(addr) => {
            let resolved = tokio::net::lookup_host(addr.as_str())
                .await
                .map_err(|e| format!("channel {}: cannot resolve {addr}: {e}", cfg.protocol))?
                .next()
                .ok_or_else(|| format!("channel {}: {addr} resolved to nothing", cfg.protocol))?;
            Dial::Tcp {
                addr: resolved,
                connect_timeout: CHANNEL_CONNECT_TIMEOUT,
            }
        }
        ChannelTarget::Unix(path) => Dial::Unix(path),
    };
    let size = usize::try_from(cfg.size).unwrap_or(usize::MAX);
    Ok(match cfg.protocol {
        Protocol::Http => InvokeService::new(http::HttpChannel::new(dial, size, metrics)),
    })
}
