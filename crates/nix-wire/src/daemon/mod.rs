//! Client of the Nix daemon worker protocol (reference §2–§6): the
//! handshake ([`handshake`]), the STDERR message loop ([`stderr`]), path
//! metadata ([`path_info`]), the operations of [`DaemonClient`]
//! ([`client`], [`ops`], [`upload`]), settings ([`options`]) and local transports
//! ([`transport`]). The library never prints: daemon log output goes to an
//! optional event channel and to `tracing` at debug level.

pub mod client;
pub mod error;
pub mod handshake;
pub mod ops;
pub mod options;
pub mod path_info;
pub mod stderr;
pub mod transport;
pub mod upload;

pub use client::DaemonClient;
pub use error::{DaemonError, Error};
pub use handshake::{ClientConfig, ProtocolVersion, Trust};
pub use ops::{BuildMode, Missing};
pub use options::ClientOptions;
pub use path_info::{topo_sort, PathInfo};
pub use stderr::{DaemonEvent, Field};
pub use transport::{connect_local, connect_socket, spawn_stdio, LocalTransport, StdioTransport};
