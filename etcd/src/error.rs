//! Errors: what the mirror reports, typed.
//!
//! Nothing that comes from etcd (a key that is not UTF-8, a value the
//! decoder rejects, an event type the client does not know, a response
//! without a header) panics: each is an [`Error`] for the revision or the
//! load that carried it.

use std::fmt;

/// A boxed error from a user's decoder.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a decoder rejected a value (or why a key could not be mapped).
///
/// A decoder returns it for a value it cannot turn into `V`; the mirror
/// adds the key and the etcd revision in [`Error::Decode`].
///
/// ```
/// use snapmap_etcd::DecodeError;
///
/// let err = DecodeError::new("not a number");
/// assert_eq!(err.to_string(), "not a number");
/// let parsed: Result<u32, _> = "x".parse::<u32>().map_err(DecodeError::from_error);
/// assert!(parsed.is_err());
/// ```
#[derive(Debug)]
pub struct DecodeError {
    source: BoxError,
}

impl DecodeError {
    /// A decode error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError {
            source: message.into().into(),
        }
    }

    /// A decode error that wraps another error (a parser's).
    pub fn from_error(error: impl Into<BoxError>) -> Self {
        DecodeError {
            source: error.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// What went wrong in the mirror.
///
/// ```
/// use snapmap_etcd::{DecodeError, Error};
///
/// let err = Error::Decode {
///     revision: 7,
///     key: b"/cfg/limit".to_vec(),
///     error: DecodeError::new("not a number"),
/// };
/// assert_eq!(
///     err.to_string(),
///     "revision 7: the value of key \"/cfg/limit\" was rejected: not a number"
/// );
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The etcd client failed: connecting, a range get, a watch.
    Etcd(etcd_client::Error),
    /// A key or value of one revision (or of a full load) was rejected by
    /// the decoder, or a key is not UTF-8. Nothing of that revision (or
    /// load) was applied.
    Decode {
        /// The etcd revision that carried it (for a full load: the load's
        /// revision).
        revision: i64,
        /// The full etcd key, prefix included.
        key: Vec<u8>,
        /// The decoder's reason.
        error: DecodeError,
    },
    /// etcd sent something the mirror cannot use (a response without a
    /// header, an unknown event type, a key outside the prefix).
    Protocol(String),
    /// The watch stream ended or was cancelled by etcd for a reason other
    /// than compaction.
    WatchEnded(String),
    /// The mirror's task has stopped (after [`Mirror::shutdown`], or
    /// after the mirror was dropped).
    ///
    /// [`Mirror::shutdown`]: crate::Mirror::shutdown
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Etcd(e) => write!(f, "etcd: {e}"),
            Error::Decode {
                revision,
                key,
                error,
            } => write!(
                f,
                "revision {revision}: the value of key \"{}\" was rejected: {error}",
                String::from_utf8_lossy(key).escape_debug()
            ),
            Error::Protocol(what) => write!(f, "unexpected response from etcd: {what}"),
            Error::WatchEnded(why) => write!(f, "the watch ended: {why}"),
            Error::Stopped => f.write_str("the mirror has stopped"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Etcd(e) => Some(e),
            Error::Decode { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<etcd_client::Error> for Error {
    fn from(e: etcd_client::Error) -> Self {
        Error::Etcd(e)
    }
}
