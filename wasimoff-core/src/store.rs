//! The [`Store`] trait: content-addressed blobs (wasm modules, rootfs zips) with aliases.
//!
//! A blob is addressed by its [`Ref`], `sha256:<64 lowercase hex>` of its bytes, so storing the
//! same bytes twice keeps one copy and a ref can be checked by anyone who holds the bytes.
//! Aliases are human names (`tsp.wasm`) that point at a ref; re-pointing an alias is allowed
//! (to its owner, if it has one).
//!
//! # Lifecycle
//!
//! A store with a total limit ([`StoreLimits::max_total_size`]) makes room for a new blob by
//! evicting blobs nothing holds; an alias or a pin ([`Store::pin`]) holds a blob. Ephemeral
//! blobs ([`PutOptions::ttl`], e.g. a task's outputs) expire and are evicted first. Aliases may
//! have owners, and an owner's aliases may be bounded by a quota ([`AliasOptions`]). The rules
//! are in [`index`], whose [`StoreIndex`] the backends here share.
//!
//! Implementations: [`MemoryStore`], and `DirStore` (feature `native`) that persists in a
//! directory. Every backend runs
//! the conformance suite in [`conformance`] (feature `conformance`).

use std::{fmt, str::FromStr, time::Duration};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::platform::{MaybeSend, MaybeSync};

mod clock;
pub use clock::{Clock, ManualClock};

pub mod index;
pub use index::StoreIndex;

mod memory;
pub use memory::MemoryStore;

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod dir;
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub use dir::DirStore;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// A content address: `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ref(String);

impl Ref {
    /// The prefix of every ref.
    pub const PREFIX: &'static str = "sha256:";

    /// The ref of some bytes.
    ///
    /// ```
    /// use wasimoff_core::store::Ref;
    /// let r = Ref::of(b"hello");
    /// assert_eq!(r.as_str(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    /// assert_eq!(r.as_str().parse::<Ref>().unwrap(), r);
    /// ```
    pub fn of(bytes: &[u8]) -> Ref {
        Ref(format!(
            "{}{}",
            Self::PREFIX,
            hex::encode(Sha256::digest(bytes))
        ))
    }

    /// Whether `text` looks like a ref (it may still be malformed; see [`FromStr`]).
    pub fn is_ref_like(text: &str) -> bool {
        text.starts_with(Self::PREFIX)
    }

    /// The ref as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `bytes` hash to this ref.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        Ref::of(bytes) == *self
    }
}

impl FromStr for Ref {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Ref, StoreError> {
        let hex = text
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| StoreError::InvalidRef(text.to_owned()))?;
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Ref(text.to_owned()))
        } else {
            Err(StoreError::InvalidRef(text.to_owned()))
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ref({})", self.0)
    }
}

/// Media types the protocol cares about.
pub mod media {
    /// A WebAssembly module.
    pub const WASM: &str = "application/wasm";
    /// A zip archive (rootfs, artifacts).
    pub const ZIP: &str = "application/zip";
    /// Anything else.
    pub const OCTET_STREAM: &str = "application/octet-stream";

    /// The media type of some bytes by their magic number.
    ///
    /// ```
    /// use wasimoff_core::store::media;
    /// assert_eq!(media::sniff(b"\0asm\x01\0\0\0"), media::WASM);
    /// assert_eq!(media::sniff(b"PK\x03\x04rest"), media::ZIP);
    /// assert_eq!(media::sniff(b"#!/bin/sh"), media::OCTET_STREAM);
    /// ```
    pub fn sniff(bytes: &[u8]) -> &'static str {
        if bytes.starts_with(b"\0asm") {
            WASM
        } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            ZIP
        } else {
            OCTET_STREAM
        }
    }
}

/// A stored blob with its media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The blob's address.
    pub r#ref: Ref,
    /// The media type recorded at upload (sniffed from the bytes).
    pub media: String,
    /// The contents.
    pub bytes: Bytes,
}

/// Limits a store enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// The largest blob accepted, in bytes.
    pub max_blob_size: u64,
    /// The most bytes stored in all (`None`: no limit). A put that does not fit evicts blobs
    /// nothing holds (no alias, no pin): ephemeral ones first, then the least recently used;
    /// if that is not enough it fails with [`StoreError::Full`] and evicts nothing.
    pub max_total_size: Option<u64>,
    /// The most aliases.
    pub max_aliases: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_blob_size: 256 << 20,
            max_total_size: None,
            max_aliases: 100_000,
        }
    }
}

/// What can go wrong in a [`Store`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The text is not a valid `sha256:` ref.
    #[error("invalid ref {0:?}: expected sha256: and 64 lowercase hex digits")]
    InvalidRef(String),
    /// The alias is not a usable name.
    #[error("invalid alias {0:?}: {1}")]
    InvalidAlias(String, &'static str),
    /// An alias must point at a stored blob.
    #[error("no blob {0}")]
    NotFound(String),
    /// The blob exceeds [`StoreLimits::max_blob_size`].
    #[error("blob of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The blob's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Storing the blob would exceed [`StoreLimits::max_total_size`] even after evicting
    /// everything nothing holds, or the alias limit.
    #[error("store is full: {0}")]
    Full(String),
    /// The alias belongs to another owner.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The owner's aliases would hold more than its quota ([`AliasOptions::quota`]).
    #[error(
        "quota of {limit} bytes exceeded: aliases of this owner hold {held} bytes, \
         {adding} more do not fit"
    )]
    QuotaExceeded {
        /// Bytes the owner's aliases hold now.
        held: u64,
        /// Bytes the new alias would add.
        adding: u64,
        /// The quota.
        limit: u64,
    },
    /// The backend does not support the operation.
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
    /// The backend failed (I/O, database).
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// Checks an alias: 1 to 255 bytes, no `/`, `\`, control characters or leading dot, not
/// ref-like (it would shadow content addresses).
pub fn validate_alias(alias: &str) -> Result<(), StoreError> {
    let bad = |why| Err(StoreError::InvalidAlias(alias.to_owned(), why));
    if alias.is_empty() || alias.len() > 255 {
        return bad("must be 1 to 255 bytes long");
    }
    if Ref::is_ref_like(alias) {
        return bad("must not start with sha256:");
    }
    if alias.starts_with('.') {
        return bad("must not start with a dot");
    }
    if alias
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return bad("must not contain slashes or control characters");
    }
    Ok(())
}

/// How [`Store::put_with`] stores a blob.
///
/// ```
/// use std::time::Duration;
/// use wasimoff_core::store::PutOptions;
/// let outputs = PutOptions::ephemeral(Duration::from_secs(600));
/// assert_eq!(outputs.ttl, Some(Duration::from_secs(600)));
/// assert!(PutOptions::durable().pinned().pin);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Keep the blob only this long (an ephemeral blob): after it, unless something holds it,
    /// the blob is gone; under pressure it is evicted before durable blobs. `None`: durable.
    /// Storing bytes that are already stored durably (or aliased) keeps them durable.
    pub ttl: Option<Duration>,
    /// Pin the blob in the same step (see [`Store::pin`]), so it cannot be evicted before the
    /// caller could pin it; release it with [`Store::unpin`].
    pub pin: bool,
}

impl PutOptions {
    /// A durable blob (what [`Store::put`] stores).
    pub fn durable() -> PutOptions {
        PutOptions::default()
    }

    /// An ephemeral blob that lives for `ttl`.
    pub fn ephemeral(ttl: Duration) -> PutOptions {
        PutOptions {
            ttl: Some(ttl),
            pin: false,
        }
    }

    /// Also pin the blob.
    pub fn pinned(self) -> PutOptions {
        PutOptions { pin: true, ..self }
    }
}

/// Who sets an alias, and what they may hold ([`Store::set_alias_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AliasOptions<'a> {
    /// The owner (an opaque id of 1 to 128 printable ASCII characters): an alias with an owner
    /// can be re-pointed or removed only by that owner ([`StoreError::Forbidden`]). `None`
    /// checks nothing and leaves the alias without an owner.
    pub owner: Option<&'a str>,
    /// The most bytes the owner's aliases may hold: the distinct blobs they point at, each
    /// counted whole (other owners of the same bytes pay for them too). A change that would go
    /// over it (and grow the owner's holding) fails with [`StoreError::QuotaExceeded`].
    pub quota: Option<u64>,
}

/// Content-addressed blob storage with aliases.
///
/// Implementations must be safe under concurrent use: two `put`s of the same bytes store one
/// blob, and a reader never sees a partially written blob.
///
/// ```
/// use wasimoff_core::store::{MemoryStore, Store, media};
///
/// # futures::executor::block_on(async {
/// let store = MemoryStore::default();
/// let r = store.put(b"\0asm\x01\0\0\0".to_vec().into()).await.unwrap();
/// store.set_alias("empty.wasm", &r).await.unwrap();
/// let blob = store.get("empty.wasm").await.unwrap().unwrap();
/// assert_eq!((blob.r#ref, blob.media.as_str()), (r, media::WASM));
/// # });
/// ```
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait Store: MaybeSend + MaybeSync {
    /// Stores bytes and returns their ref (the same ref if they were stored before).
    async fn put(&self, bytes: Bytes) -> Result<Ref, StoreError>;

    /// The blob named by a ref or an alias; `Ok(None)` if there is none.
    async fn get(&self, name: &str) -> Result<Option<Blob>, StoreError>;

    /// Resolves a ref or an alias to the ref of a stored blob.
    async fn resolve(&self, name: &str) -> Result<Option<Ref>, StoreError>;

    /// Whether the blob named by a ref or an alias is stored.
    async fn has(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.resolve(name).await?.is_some())
    }

    /// Stores bytes as `options` say (ephemeral, pinned) and returns their ref.
    ///
    /// The default stores them durably with [`Store::put`] and pins nothing: right for stores
    /// that never evict.
    async fn put_with(&self, bytes: Bytes, options: PutOptions) -> Result<Ref, StoreError> {
        let _ = options;
        self.put(bytes).await
    }

    /// Resolves a ref or an alias and pins the blob in one step: it is neither evicted nor
    /// expired until as many [`Store::unpin`]s. Pins live in memory only (a restarted process
    /// holds none). `Ok(None)` if there is no such blob.
    ///
    /// The default only resolves: right for stores that never evict.
    async fn pin(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        self.resolve(name).await
    }

    /// Releases one pin taken by [`Store::pin`] or [`PutOptions::pin`].
    fn unpin(&self, r: &Ref) {
        let _ = r;
    }

    /// Points an alias at a stored blob (replacing an earlier target).
    async fn set_alias(&self, alias: &str, target: &Ref) -> Result<(), StoreError>;

    /// Points an alias at a stored blob as `options.owner`, within `options.quota`.
    ///
    /// The default supports neither owners nor quotas: it answers [`StoreError::Unsupported`]
    /// when either is given, so a store without them cannot silently let anyone take an alias.
    async fn set_alias_with(
        &self,
        alias: &str,
        target: &Ref,
        options: AliasOptions<'_>,
    ) -> Result<(), StoreError> {
        if options != AliasOptions::default() {
            return Err(StoreError::Unsupported("alias owners and quotas"));
        }
        self.set_alias(alias, target).await
    }

    /// Removes an alias (not its blob) if `owner` may: `Ok(false)` if there is none,
    /// [`StoreError::Forbidden`] if it belongs to another owner. The default is unsupported.
    async fn remove_alias(&self, alias: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let _ = (alias, owner);
        Err(StoreError::Unsupported("removing aliases"))
    }

    /// Removes a blob and every alias pointing at it; `false` if it was not stored.
    async fn delete(&self, r: &Ref) -> Result<bool, StoreError>;

    /// The refs of all stored blobs, in no particular order.
    async fn list(&self) -> Result<Vec<Ref>, StoreError>;

    /// The limits this store enforces.
    fn limits(&self) -> StoreLimits;
}
