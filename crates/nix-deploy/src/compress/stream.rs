//! [`MaybeZstd`]: a connection's byte stream, plain or with zstd on the
//! way out.

use tokio_util::either::Either;

use super::ZstdWriter;

/// A daemon connection's stream: as it is (`Left`), or compressed towards
/// the node (`Right`).
pub type MaybeZstd<S> = Either<S, ZstdWriter<S>>;
