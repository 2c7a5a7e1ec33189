//! [`MemoryStore`]: a [`Store`] in a hash map, the library default.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use bytes::Bytes;

use super::{
    AliasOptions, Blob, Clock, PutOptions, Ref, Store, StoreError, StoreIndex, StoreLimits, media,
};

#[derive(Debug, Default)]
struct Inner {
    index: StoreIndex,
    /// The bytes and media type of every blob in the index.
    blobs: HashMap<Ref, (Bytes, &'static str)>,
}

impl Inner {
    fn forget(&mut self, victims: Vec<(Ref, u64)>) {
        for (r, _) in victims {
            self.blobs.remove(&r);
        }
    }
}

/// Blobs and aliases in memory; lost when the process ends. Evicts and expires by the rules of
/// [`index`](super::index).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    limits: StoreLimits,
    clock: Clock,
}

impl MemoryStore {
    /// An empty store with the given limits.
    pub fn with_limits(limits: StoreLimits) -> Self {
        MemoryStore::with_clock(limits, Clock::system())
    }

    /// An empty store with the given limits, reading time (for recency and expiry) from
    /// `clock`.
    pub fn with_clock(limits: StoreLimits, clock: Clock) -> Self {
        MemoryStore {
            inner: Mutex::default(),
            limits,
            clock,
        }
    }

    // Every critical section is a handful of map operations that cannot panic halfway, so a
    // poisoned lock still guards consistent data.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// The expiry of a put made at `now`.
pub(super) fn expiry(now: u64, options: &PutOptions) -> Option<u64> {
    options
        .ttl
        .map(|ttl| now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Store for MemoryStore {
    async fn put(&self, bytes: Bytes) -> Result<Ref, StoreError> {
        self.put_with(bytes, PutOptions::durable()).await
    }

    async fn put_with(&self, bytes: Bytes, options: PutOptions) -> Result<Ref, StoreError> {
        let size = bytes.len() as u64;
        if size > self.limits.max_blob_size {
            return Err(StoreError::TooLarge {
                size,
                limit: self.limits.max_blob_size,
            });
        }
        // Hash outside the lock: it is the expensive part (about 2 ms per MiB, so large blobs
        // are hashed off the async workers).
        let r = if bytes.len() > 1 << 20 {
            let blob = bytes.clone();
            crate::platform::blocking(move || Ref::of(&blob)).await
        } else {
            Ref::of(&bytes)
        };
        let media = media::sniff(&bytes);
        let now = self.now();
        let expires = expiry(now, &options);
        let mut inner = self.lock();
        if inner
            .index
            .put_existing(&r, now, expires, options.pin)
            .is_some()
        {
            return Ok(r);
        }
        let expired = inner.index.expire(now);
        inner.forget(expired);
        let victims = inner.index.make_room(size, self.limits.max_total_size)?;
        if !victims.is_empty() {
            tracing::debug!(count = victims.len(), "evicted blobs to make room");
        }
        inner.forget(victims);
        inner
            .index
            .insert(r.clone(), size, now, expires, options.pin);
        inner.blobs.insert(r.clone(), (bytes, media));
        Ok(r)
    }

    async fn get(&self, name: &str) -> Result<Option<Blob>, StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let Some(r) = inner.index.resolve(name, now) else {
            return Ok(None);
        };
        inner.index.touch(&r, now);
        Ok(inner.blobs.get(&r).map(|(bytes, media)| Blob {
            r#ref: r.clone(),
            media: (*media).to_owned(),
            bytes: bytes.clone(),
        }))
    }

    async fn resolve(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        Ok(self.lock().index.resolve(name, self.now()))
    }

    async fn pin(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        let now = self.now();
        Ok(self.lock().index.pin(name, now).map(|(r, _)| r))
    }

    fn unpin(&self, r: &Ref) {
        self.lock().index.unpin(r);
    }

    async fn set_alias(&self, alias: &str, target: &Ref) -> Result<(), StoreError> {
        self.set_alias_with(alias, target, AliasOptions::default())
            .await
    }

    async fn set_alias_with(
        &self,
        alias: &str,
        target: &Ref,
        options: AliasOptions<'_>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.lock().index.set_alias(
            alias,
            target,
            options.owner,
            options.quota,
            self.limits.max_aliases,
            now,
        )?;
        Ok(())
    }

    async fn remove_alias(&self, alias: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        self.lock().index.remove_alias(alias, owner)
    }

    async fn delete(&self, r: &Ref) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let removed = inner.index.remove(r).is_some();
        inner.blobs.remove(r);
        Ok(removed)
    }

    async fn list(&self) -> Result<Vec<Ref>, StoreError> {
        Ok(self.lock().index.refs(self.now()))
    }

    fn limits(&self) -> StoreLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(crate::store::MemoryStore::with_clock);
}
