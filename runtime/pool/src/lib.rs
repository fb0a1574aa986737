//! Outrigger's connection pools, below the proxy core and the channels and knowing neither:
//! where connections go ([`Dial`]: a TCP address, a unix socket, or a listener in this process
//! reached through the [`LocalListeners`] interface the proxy core implements), the bounded
//! pool ([`Pool`]) with one HTTP/1.1 exchange on it ([`exchange`]), and the multiplexed pool
//! for Bolt and Dubbo ([`MuxPool`]) with its framing loops, and the h2c connection of a streaming
//! upstream ([`H2Pool`]). Every error a pool returns knows
//! its [`outrigger_core::Cause`].

mod bounded;
mod dial;
mod h2;
mod http1;
mod local;
mod mux;
mod wait;
mod wire;

pub use self::{
    bounded::{Connector, Pool, PoolError, PoolSettings, Pooled},
    dial::{ConnectError, Dial, Io, Open, Secure, Securing},
    h2::{H2Error, H2Pool},
    http1::{
        BodyError, ExchangeError, Http1Conn, Http1Connector, Http1Pool, exchange, exchange_waited,
    },
    local::{LocalHttp, LocalListeners, LocalMux, LocalWire},
    mux::{Heartbeat, MAX_PENDING_PER_CONNECTION, MuxError, MuxPool, MuxSettings, write_batch},
    wait::{WaitLimit, Waiting},
    wire::{Bolt, Dubbo, FrameKind, Wire},
};
