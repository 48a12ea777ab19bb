//! Client of the Nix daemon worker protocol (reference §2–§6): protocol
//! versions ([`version`]), the handshake ([`handshake`]), the STDERR message loop ([`stderr`]), path
//! metadata ([`path_info`]), the operations of [`DaemonClient`]
//! ([`client`], [`ops`], [`upload`]), settings ([`options`]) and local transports
//! ([`transport`]). The library never prints: daemon log output goes to an
//! optional event channel and to `tracing` at debug level.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nix_wire::daemon::Error> {
//! use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient};
//! use nix_wire::StorePath;
//!
//! let mut client = DaemonClient::connect(connect_local().await?, ClientConfig::default()).await?;
//! let path = StorePath::parse("/nix/store/g7lkiv5g5vdwr6vb5vpsmi573bs288bk-hello1").unwrap();
//! if let Some(info) = client.query_path_info(&path).await? {
//!     let mut nar = Vec::new();
//!     client.nar_from_path(&info.path, &mut nar).await?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod error;
pub mod handshake;
mod idle;
mod opcode;
pub mod ops;
pub mod options;
pub mod path_info;
pub mod stderr;
pub mod transport;
pub mod upload;
pub mod version;

pub use client::DaemonClient;
pub use error::{strip_ansi, DaemonError, Error};
pub use handshake::{ClientConfig, Trust};
pub use idle::DEFAULT_IDLE_TIMEOUT;
pub use ops::{BuildMode, Missing, PIPELINE_GROUP};
pub use options::ClientOptions;
pub use path_info::{topo_sort, PathInfo};
pub use stderr::{DaemonEvent, Field};
pub use transport::{connect_local, connect_socket, spawn_stdio, LocalTransport, StdioTransport};
pub use version::ProtocolVersion;
