//! [`MaybeZstd`]: a connection's byte stream, plain or with zstd on the
//! way out.

use tokio_util::either::Either;

use super::{Striped, ZstdWriter};

/// A daemon connection's stream: as it is (`Left`), or compressed towards
/// the node over one or more channels (`Right`).
pub type MaybeZstd<S> = Either<S, ZstdWriter<Striped<S>>>;
