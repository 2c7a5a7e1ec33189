//! [`MemoryStore`]: a [`Store`] in a hash map, the library default.

use std::{
    collections::HashMap,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use bytes::Bytes;

use super::{Blob, Ref, Store, StoreError, StoreLimits, media, validate_alias};

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<Ref, Blob>,
    aliases: HashMap<String, Ref>,
    total: u64,
}

/// Blobs and aliases in memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
    limits: StoreLimits,
}

impl MemoryStore {
    /// An empty store with the given limits.
    pub fn with_limits(limits: StoreLimits) -> Self {
        MemoryStore {
            inner: RwLock::default(),
            limits,
        }
    }

    // Every critical section is a handful of map operations that cannot panic halfway, so a
    // poisoned lock still guards consistent data.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn resolve(&self, name: &str) -> Option<Ref> {
        let r = if Ref::is_ref_like(name) {
            name.parse::<Ref>().ok()?
        } else {
            self.aliases.get(name)?.clone()
        };
        self.blobs.contains_key(&r).then_some(r)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Store for MemoryStore {
    async fn put(&self, bytes: Bytes) -> Result<Ref, StoreError> {
        let size = bytes.len() as u64;
        if size > self.limits.max_blob_size {
            return Err(StoreError::TooLarge {
                size,
                limit: self.limits.max_blob_size,
            });
        }
        // Hash outside the lock: it is the expensive part.
        let r = Ref::of(&bytes);
        let media = media::sniff(&bytes).to_owned();
        let mut inner = self.write();
        if inner.blobs.contains_key(&r) {
            return Ok(r);
        }
        if let Some(max) = self.limits.max_total_size
            && inner.total + size > max
        {
            return Err(StoreError::Full(format!(
                "{} of {max} bytes used, {size} more do not fit",
                inner.total
            )));
        }
        inner.total += size;
        inner.blobs.insert(
            r.clone(),
            Blob {
                r#ref: r.clone(),
                media,
                bytes,
            },
        );
        Ok(r)
    }

    async fn get(&self, name: &str) -> Result<Option<Blob>, StoreError> {
        let inner = self.read();
        Ok(inner
            .resolve(name)
            .and_then(|r| inner.blobs.get(&r).cloned()))
    }

    async fn resolve(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        Ok(self.read().resolve(name))
    }

    async fn set_alias(&self, alias: &str, target: &Ref) -> Result<(), StoreError> {
        validate_alias(alias)?;
        let mut inner = self.write();
        if !inner.blobs.contains_key(target) {
            return Err(StoreError::NotFound(target.to_string()));
        }
        if !inner.aliases.contains_key(alias) && inner.aliases.len() >= self.limits.max_aliases {
            return Err(StoreError::Full(format!(
                "{} aliases",
                self.limits.max_aliases
            )));
        }
        inner.aliases.insert(alias.to_owned(), target.clone());
        Ok(())
    }

    async fn delete(&self, r: &Ref) -> Result<bool, StoreError> {
        let mut inner = self.write();
        let Some(blob) = inner.blobs.remove(r) else {
            return Ok(false);
        };
        inner.total -= blob.bytes.len() as u64;
        inner.aliases.retain(|_, target| target != r);
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<Ref>, StoreError> {
        Ok(self.read().blobs.keys().cloned().collect())
    }

    fn limits(&self) -> StoreLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(crate::store::MemoryStore::with_limits);
}
