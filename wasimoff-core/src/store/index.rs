//! [`StoreIndex`]: a store's lifecycle bookkeeping without I/O — sizes, recency, expiry, pins,
//! aliases and their owners — and the eviction policy on top. Backends keep one index next to
//! their bytes and do only the I/O it asks for; time is an argument, so the policy is tested
//! directly.
//!
//! # The rules
//!
//! - A blob is **held** while an alias points at it or it is pinned. Held blobs are never
//!   evicted and never expire.
//! - A blob is **durable** (uploads, task files) or **ephemeral** (stored with a time to live,
//!   e.g. a task's outputs). Storing the same bytes durably, or aliasing them, makes a blob
//!   durable; storing them ephemerally again only extends the expiry.
//! - An ephemeral blob past its expiry and not pinned is gone: lookups miss it at once, and
//!   [`StoreIndex::expire`] hands it to the backend to delete.
//! - A put that does not fit the total limit evicts blobs nothing holds: ephemeral ones first
//!   (soonest expiry first), then durable ones, least recently used first. If even that is not
//!   enough nothing is evicted and the put fails with [`StoreError::Full`].
//! - An alias may have an owner. Only its owner (or a caller without an owner, which checks
//!   nothing) may re-point or remove it; a re-point without an owner leaves it unowned.
//! - An owner's usage is the size of the distinct blobs its aliases point at, each counted
//!   whole, whoever else holds or stored the same bytes; a quota bounds it.

use std::collections::{BTreeMap, HashMap};

use super::{Ref, StoreError, validate_alias};

/// How often recency is worth persisting, per blob (see [`StoreIndex::touch`]).
pub const SYNC_EVERY_MS: u64 = 60_000;

/// An alias: the blob it names and who owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    /// The blob.
    pub target: Ref,
    /// The owner (an opaque id), if any.
    pub owner: Option<String>,
}

/// Eviction order: ephemeral blobs (class 0, by expiry) before durable ones (class 1, by last
/// use); `seq` breaks ties in the order of use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    class: u8,
    at: u64,
    seq: u64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
    expires: Option<u64>,
    pins: u32,
    aliases: u32,
    seq: u64,
    /// When recency was last reported as worth persisting.
    synced: u64,
    /// The entry's place in `order`, while it is evictable.
    key: Option<Key>,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.pins > 0 || self.expires.is_none_or(|at| now < at)
    }
}

/// The expiry of a blob before and after a put of bytes already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The expiry before (`None`: durable).
    pub before: Option<u64>,
    /// The expiry after.
    pub after: Option<u64>,
}

/// What [`StoreIndex::set_alias`] changed besides the alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasChange {
    /// The alias as it was.
    pub previous: Option<Alias>,
    /// The target was ephemeral and is durable now.
    pub made_durable: bool,
}

/// A store's lifecycle bookkeeping. See the [module docs](self).
#[derive(Debug, Default)]
pub struct StoreIndex {
    entries: HashMap<Ref, Entry>,
    /// Evictable entries (nothing holds them) in eviction order.
    order: BTreeMap<Key, Ref>,
    aliases: HashMap<String, Alias>,
    /// Per owner: the blobs its aliases point at, with how many of its aliases do.
    held: HashMap<String, HashMap<Ref, u32>>,
    total: u64,
    seq: u64,
}

/// Checks an owner id: 1 to 128 printable ASCII characters without spaces (persistent backends
/// store it as text).
pub fn validate_owner(owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() || owner.len() > 128 || !owner.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Backend(format!(
            "invalid owner {owner:?}: must be 1 to 128 printable ASCII characters"
        )));
    }
    Ok(())
}

impl StoreIndex {
    /// An empty index.
    pub fn new() -> StoreIndex {
        StoreIndex::default()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Puts an entry where it belongs in the eviction order (or out of it, while held).
    fn rekey(&mut self, r: &Ref) {
        let Some(entry) = self.entries.get_mut(r) else {
            return;
        };
        if let Some(old) = entry.key.take() {
            self.order.remove(&old);
        }
        if entry.pins == 0 && entry.aliases == 0 {
            let key = match entry.expires {
                Some(at) => Key {
                    class: 0,
                    at,
                    seq: entry.seq,
                },
                None => Key {
                    class: 1,
                    at: entry.last_used,
                    seq: entry.seq,
                },
            };
            entry.key = Some(key);
            self.order.insert(key, r.clone());
        }
    }

    /// Bytes of all blobs in the index (expired ones included until [`StoreIndex::expire`]).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of blobs in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no blobs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of aliases.
    pub fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// The size of a blob in the index, live or not.
    pub fn size(&self, r: &Ref) -> Option<u64> {
        self.entries.get(r).map(|e| e.size)
    }

    /// The expiry of a blob (`None`: durable or not stored).
    pub fn expires(&self, r: &Ref) -> Option<u64> {
        self.entries.get(r).and_then(|e| e.expires)
    }

    /// Whether a blob is stored and not expired.
    pub fn is_live(&self, r: &Ref, now: u64) -> bool {
        self.entries.get(r).is_some_and(|e| e.live(now))
    }

    /// An alias.
    pub fn alias(&self, alias: &str) -> Option<&Alias> {
        self.aliases.get(alias)
    }

    /// All aliases.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &Alias)> {
        self.aliases.iter().map(|(name, a)| (name.as_str(), a))
    }

    /// The live blob a ref or alias names.
    pub fn resolve(&self, name: &str, now: u64) -> Option<Ref> {
        let r = if Ref::is_ref_like(name) {
            name.parse::<Ref>().ok()?
        } else {
            self.aliases.get(name)?.target.clone()
        };
        self.is_live(&r, now).then_some(r)
    }

    /// The refs of all live blobs.
    pub fn refs(&self, now: u64) -> Vec<Ref> {
        self.entries
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Records a use of a live blob. `None` if there is none; otherwise whether recency is worth
    /// persisting now (at most once per [`SYNC_EVERY_MS`] per blob).
    pub fn touch(&mut self, r: &Ref, now: u64) -> Option<bool> {
        let seq = self.next_seq();
        let entry = self.entries.get_mut(r).filter(|e| e.live(now))?;
        entry.last_used = entry.last_used.max(now);
        entry.seq = seq;
        let due = now >= entry.synced.saturating_add(SYNC_EVERY_MS);
        if due {
            entry.synced = now;
        }
        self.rekey(r);
        Some(due)
    }

    /// Adds a blob found in a persistent backend at open (its recency from the backend).
    pub fn load(&mut self, r: Ref, size: u64, last_used: u64, expires: Option<u64>) {
        self.insert_entry(r, size, last_used, expires, false);
    }

    /// Adds a newly stored blob (after [`StoreIndex::make_room`]).
    pub fn insert(&mut self, r: Ref, size: u64, now: u64, expires: Option<u64>, pin: bool) {
        self.insert_entry(r, size, now, expires, pin);
    }

    fn insert_entry(&mut self, r: Ref, size: u64, at: u64, expires: Option<u64>, pin: bool) {
        if self.entries.contains_key(&r) {
            self.remove(&r);
        }
        let seq = self.next_seq();
        self.total += size;
        self.entries.insert(
            r.clone(),
            Entry {
                size,
                last_used: at,
                expires,
                pins: u32::from(pin),
                aliases: 0,
                seq,
                synced: at,
                key: None,
            },
        );
        self.rekey(&r);
    }

    /// A put of bytes already in the index (live or expired but not yet deleted): records the
    /// use, pins if asked, and merges the expiry (a durable put makes the blob durable, an
    /// ephemeral one extends it). `None` if the blob is not in the index.
    pub fn put_existing(
        &mut self,
        r: &Ref,
        now: u64,
        expires: Option<u64>,
        pin: bool,
    ) -> Option<Restored> {
        let seq = self.next_seq();
        let entry = self.entries.get_mut(r)?;
        let before = entry.expires;
        let alive = entry.live(now);
        entry.expires = match (before, expires) {
            (None, _) | (_, None) => None,
            // An expired blob put again lives from now on.
            (Some(old), Some(new)) if alive => Some(old.max(new)),
            (Some(_), Some(new)) => Some(new),
        };
        entry.last_used = entry.last_used.max(now);
        entry.seq = seq;
        if pin {
            entry.pins += 1;
        }
        let after = entry.expires;
        self.rekey(r);
        Some(Restored { before, after })
    }

    /// Removes the expired blobs nothing pins; the backend deletes their bytes.
    pub fn expire(&mut self, now: u64) -> Vec<(Ref, u64)> {
        let expired: Vec<Ref> = self
            .order
            .iter()
            .take_while(|(k, _)| k.class == 0 && k.at <= now)
            .map(|(_, r)| r.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|r| self.remove(&r).map(|(size, _)| (r, size)))
            .collect()
    }

    /// Makes room for `size` more bytes under `limit` by removing blobs nothing holds, in
    /// eviction order; the backend deletes their bytes. If that cannot make enough room,
    /// nothing is removed and the answer is [`StoreError::Full`].
    pub fn make_room(
        &mut self,
        size: u64,
        limit: Option<u64>,
    ) -> Result<Vec<(Ref, u64)>, StoreError> {
        let Some(limit) = limit else {
            return Ok(Vec::new());
        };
        if self.total.saturating_add(size) <= limit {
            return Ok(Vec::new());
        }
        if size > limit {
            return Err(StoreError::Full(format!(
                "a blob of {size} bytes exceeds the store's total limit of {limit} bytes"
            )));
        }
        let need = self.total + size - limit;
        let mut freed = 0;
        let mut victims = Vec::new();
        for (r, entry) in self
            .order
            .values()
            .filter_map(|r| self.entries.get(r).map(|e| (r, e)))
        {
            if freed >= need {
                break;
            }
            freed += entry.size;
            victims.push(r.clone());
        }
        if freed < need {
            let evictable: u64 = self
                .order
                .values()
                .filter_map(|r| self.entries.get(r))
                .map(|e| e.size)
                .sum();
            return Err(StoreError::Full(format!(
                "{} of {limit} bytes used, {} of them held by aliases or tasks in flight; \
                 {size} more do not fit",
                self.total,
                self.total - evictable
            )));
        }
        Ok(victims
            .into_iter()
            .filter_map(|r| self.remove(&r).map(|(size, _)| (r, size)))
            .collect())
    }

    /// Pins the live blob a ref or alias names (and records the use): it is neither evicted
    /// nor expired until as many [`StoreIndex::unpin`]s. The answer says whether recency is
    /// worth persisting (see [`StoreIndex::touch`]).
    pub fn pin(&mut self, name: &str, now: u64) -> Option<(Ref, bool)> {
        let r = self.resolve(name, now)?;
        let due = self.touch(&r, now)?;
        if let Some(entry) = self.entries.get_mut(&r) {
            entry.pins += 1;
        }
        self.rekey(&r);
        Some((r, due))
    }

    /// Releases one pin (nothing if the blob is gone or not pinned).
    pub fn unpin(&mut self, r: &Ref) {
        if let Some(entry) = self.entries.get_mut(r)
            && entry.pins > 0
        {
            entry.pins -= 1;
            self.rekey(r);
        }
    }

    /// Bytes of the distinct blobs the aliases of `owner` point at.
    pub fn usage(&self, owner: &str) -> u64 {
        self.held.get(owner).map_or(0, |refs| {
            refs.keys()
                .filter_map(|r| self.entries.get(r))
                .map(|e| e.size)
                .sum()
        })
    }

    fn holds(&self, owner: &str, r: &Ref) -> u32 {
        self.held
            .get(owner)
            .and_then(|refs| refs.get(r))
            .copied()
            .unwrap_or(0)
    }

    /// Whether [`StoreIndex::set_alias`] would succeed, without changing anything.
    pub fn check_alias(
        &self,
        alias: &str,
        target: &Ref,
        owner: Option<&str>,
        quota: Option<u64>,
        max_aliases: usize,
        now: u64,
    ) -> Result<(), StoreError> {
        validate_alias(alias)?;
        if let Some(owner) = owner {
            validate_owner(owner)?;
        }
        let Some(size) = self
            .entries
            .get(target)
            .filter(|e| e.live(now))
            .map(|e| e.size)
        else {
            return Err(StoreError::NotFound(target.to_string()));
        };
        let previous = self.aliases.get(alias);
        match previous {
            Some(Alias {
                owner: Some(theirs),
                ..
            }) if owner.is_some_and(|mine| mine != theirs) => {
                return Err(StoreError::Forbidden(format!(
                    "alias {alias:?} belongs to another owner"
                )));
            }
            None if self.aliases.len() >= max_aliases => {
                return Err(StoreError::Full(format!("{max_aliases} aliases")));
            }
            _ => {}
        }
        if let (Some(owner), Some(limit)) = (owner, quota) {
            let held = self.usage(owner);
            let adding = if self.holds(owner, target) > 0 {
                0
            } else {
                size
            };
            let releasing = match previous {
                Some(Alias {
                    target: old,
                    owner: Some(theirs),
                }) if theirs == owner && old != target && self.holds(owner, old) == 1 => {
                    self.size(old).unwrap_or(0)
                }
                _ => 0,
            };
            let after = (held + adding).saturating_sub(releasing);
            if after > limit && after > held {
                return Err(StoreError::QuotaExceeded {
                    held,
                    adding,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Points an alias at a live blob for `owner` (see [`StoreIndex::check_alias`] for the
    /// errors). The target becomes durable.
    pub fn set_alias(
        &mut self,
        alias: &str,
        target: &Ref,
        owner: Option<&str>,
        quota: Option<u64>,
        max_aliases: usize,
        now: u64,
    ) -> Result<AliasChange, StoreError> {
        self.check_alias(alias, target, owner, quota, max_aliases, now)?;
        let previous = self.unlink(alias);
        let seq = self.next_seq();
        let mut made_durable = false;
        if let Some(entry) = self.entries.get_mut(target) {
            entry.aliases += 1;
            made_durable = entry.expires.take().is_some();
            entry.last_used = entry.last_used.max(now);
            entry.seq = seq;
        }
        self.link(alias, target, owner);
        Ok(AliasChange {
            previous,
            made_durable,
        })
    }

    /// Records `alias -> target` for `owner` (the target's alias count is the caller's).
    fn link(&mut self, alias: &str, target: &Ref, owner: Option<&str>) {
        if let Some(owner) = owner {
            *self
                .held
                .entry(owner.to_owned())
                .or_default()
                .entry(target.clone())
                .or_default() += 1;
        }
        self.aliases.insert(
            alias.to_owned(),
            Alias {
                target: target.clone(),
                owner: owner.map(str::to_owned),
            },
        );
        self.rekey(target);
    }

    /// Adds an alias found in a persistent backend at open; ignored if its target is not in
    /// the index (the backend should drop it).
    pub fn load_alias(&mut self, alias: &str, target: &Ref, owner: Option<&str>) -> bool {
        if !self.entries.contains_key(target) {
            return false;
        }
        self.unlink(alias);
        if let Some(entry) = self.entries.get_mut(target) {
            entry.aliases += 1;
            entry.expires = None;
        }
        self.link(alias, target, owner);
        true
    }

    /// Whether `owner` may remove an alias: `Ok(false)` if there is none.
    pub fn check_remove_alias(&self, alias: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        match self.aliases.get(alias) {
            None => Ok(false),
            Some(Alias {
                owner: Some(theirs),
                ..
            }) if owner.is_some_and(|mine| mine != theirs) => Err(StoreError::Forbidden(format!(
                "alias {alias:?} belongs to another owner"
            ))),
            Some(_) => Ok(true),
        }
    }

    /// Removes an alias if `owner` may (see [`StoreIndex::check_remove_alias`]); its blob
    /// stays, and is evictable once nothing else holds it.
    pub fn remove_alias(&mut self, alias: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        if !self.check_remove_alias(alias, owner)? {
            return Ok(false);
        }
        Ok(self.unlink(alias).is_some())
    }

    /// Removes an alias without checks, updating its target and owner.
    fn unlink(&mut self, alias: &str) -> Option<Alias> {
        let old = self.aliases.remove(alias)?;
        if let Some(entry) = self.entries.get_mut(&old.target) {
            entry.aliases = entry.aliases.saturating_sub(1);
        }
        if let Some(owner) = &old.owner
            && let Some(refs) = self.held.get_mut(owner)
        {
            if let Some(count) = refs.get_mut(&old.target) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    refs.remove(&old.target);
                }
            }
            if refs.is_empty() {
                self.held.remove(owner);
            }
        }
        self.rekey(&old.target);
        Some(old)
    }

    /// Removes a blob whatever holds it, with every alias pointing at it: its size and the
    /// aliases removed. `None` if it is not in the index.
    pub fn remove(&mut self, r: &Ref) -> Option<(u64, Vec<String>)> {
        let mut names: Vec<String> = match self.entries.get(r) {
            Some(entry) if entry.aliases > 0 => self
                .aliases
                .iter()
                .filter(|(_, a)| a.target == *r)
                .map(|(name, _)| name.clone())
                .collect(),
            Some(_) => Vec::new(),
            None => return None,
        };
        names.sort();
        for name in &names {
            self.unlink(name);
        }
        let entry = self.entries.remove(r)?;
        if let Some(key) = entry.key {
            self.order.remove(&key);
        }
        self.total -= entry.size;
        Some((entry.size, names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u8) -> Ref {
        Ref::of(&[n])
    }

    const NO_LIMIT: usize = usize::MAX;

    #[test]
    fn evicts_least_recently_used_unheld_blobs_first() {
        let mut index = StoreIndex::new();
        index.insert(r(1), 10, 100, None, false);
        index.insert(r(2), 10, 200, None, false);
        index.insert(r(3), 10, 300, None, false);
        index.touch(&r(1), 400);
        let victims = index.make_room(10, Some(30)).unwrap();
        assert_eq!(victims, vec![(r(2), 10)]);
        assert_eq!(index.total(), 20);
        // Two more: 3 then 1.
        let victims = index.make_room(20, Some(30)).unwrap();
        assert_eq!(victims, vec![(r(3), 10)]);
        let victims = index.make_room(30, Some(30)).unwrap();
        assert_eq!(victims, vec![(r(1), 10)]);
        assert!(index.is_empty());
    }

    #[test]
    fn ephemeral_blobs_go_first_then_expire() {
        let mut index = StoreIndex::new();
        index.insert(r(1), 10, 100, None, false);
        index.insert(r(2), 10, 200, Some(10_000), false);
        index.insert(r(3), 10, 300, Some(5_000), false);
        assert_eq!(
            index.make_room(10, Some(30)).unwrap(),
            vec![(r(3), 10)],
            "the soonest to expire goes first, before an older durable blob"
        );
        assert_eq!(index.resolve(r(2).as_str(), 9_999), Some(r(2)));
        assert_eq!(index.resolve(r(2).as_str(), 10_000), None, "expired");
        assert_eq!(index.refs(10_000), vec![r(1)]);
        assert_eq!(index.expire(9_999), vec![]);
        assert_eq!(index.expire(10_000), vec![(r(2), 10)]);
        assert_eq!(index.total(), 10);
    }

    #[test]
    fn pinned_and_aliased_blobs_stay_and_full_evicts_nothing() {
        let mut index = StoreIndex::new();
        index.insert(r(1), 10, 100, None, false);
        index.insert(r(2), 10, 200, Some(1_000), true);
        index.insert(r(3), 10, 300, None, false);
        index
            .set_alias("a", &r(1), None, None, NO_LIMIT, 300)
            .unwrap();
        let err = index.make_room(20, Some(30)).unwrap_err();
        assert!(
            matches!(&err, StoreError::Full(m) if m.contains("20 of them held")),
            "{err}"
        );
        assert_eq!(index.len(), 3, "a failed make_room evicts nothing");
        // A pinned ephemeral blob outlives its expiry until unpinned.
        assert_eq!(index.expire(5_000), vec![]);
        assert!(index.is_live(&r(2), 5_000));
        index.unpin(&r(2));
        assert!(!index.is_live(&r(2), 5_000));
        assert_eq!(index.expire(5_000), vec![(r(2), 10)]);
        // Removing the alias makes the blob evictable again (aliasing it was its last use).
        assert!(index.remove_alias("a", None).unwrap());
        assert_eq!(
            index.make_room(30, Some(30)).unwrap(),
            vec![(r(3), 10), (r(1), 10)]
        );
    }

    #[test]
    fn puts_and_aliases_make_ephemeral_blobs_durable() {
        let mut index = StoreIndex::new();
        index.insert(r(1), 10, 0, Some(1_000), false);
        let got = index.put_existing(&r(1), 500, Some(2_000), false).unwrap();
        assert_eq!((got.before, got.after), (Some(1_000), Some(2_000)));
        let got = index.put_existing(&r(1), 600, None, false).unwrap();
        assert_eq!(got.after, None, "a durable put wins");
        index.insert(r(2), 10, 0, Some(1_000), false);
        let change = index
            .set_alias("b", &r(2), None, None, NO_LIMIT, 10)
            .unwrap();
        assert!(change.made_durable);
        assert_eq!(index.expire(u64::MAX), vec![]);
    }

    #[test]
    fn owners_and_quotas() {
        let mut index = StoreIndex::new();
        for n in 1..=3 {
            index.insert(r(n), 10, 0, None, false);
        }
        index.insert(r(9), 5, 0, None, false);
        index
            .set_alias("x", &r(1), Some("alice"), Some(20), NO_LIMIT, 0)
            .unwrap();
        let err = index
            .set_alias("x", &r(2), Some("bob"), Some(20), NO_LIMIT, 0)
            .unwrap_err();
        assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
        assert_eq!(
            index.remove_alias("x", Some("bob")),
            Err(StoreError::Forbidden(
                "alias \"x\" belongs to another owner".into()
            ))
        );
        // A second alias on the same blob costs nothing; a second blob fills the quota.
        index
            .set_alias("x2", &r(1), Some("alice"), Some(20), NO_LIMIT, 0)
            .unwrap();
        index
            .set_alias("y", &r(2), Some("alice"), Some(20), NO_LIMIT, 0)
            .unwrap();
        assert_eq!(index.usage("alice"), 20);
        let err = index
            .set_alias("z", &r(3), Some("alice"), Some(20), NO_LIMIT, 0)
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::QuotaExceeded {
                held: 20,
                adding: 10,
                limit: 20
            }
        );
        // Re-pointing y from its only alias to another blob of the same size fits.
        index
            .set_alias("y", &r(3), Some("alice"), Some(20), NO_LIMIT, 0)
            .unwrap();
        assert_eq!(index.usage("alice"), 20);
        // Bob holds the same bytes too; each owner is charged in full.
        index
            .set_alias("bobs", &r(3), Some("bob"), Some(20), NO_LIMIT, 0)
            .unwrap();
        assert_eq!((index.usage("alice"), index.usage("bob")), (20, 10));
        // Without an owner nothing is checked and the alias ends up unowned.
        index
            .set_alias("x", &r(9), None, None, NO_LIMIT, 0)
            .unwrap();
        assert_eq!(index.alias("x").unwrap().owner, None);
        assert_eq!(index.usage("alice"), 20, "x2 still holds blob 1");
        assert!(index.remove_alias("x2", Some("alice")).unwrap());
        assert!(!index.remove_alias("x2", Some("alice")).unwrap());
        assert_eq!(index.usage("alice"), 10);
        // Deleting a blob drops its aliases and the charge.
        assert_eq!(index.remove(&r(3)), Some((10, vec_sorted(&["bobs", "y"]))));
        assert_eq!((index.usage("alice"), index.usage("bob")), (0, 0));
    }

    fn vec_sorted(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }
}
