//! The conformance suite every [`Store`] backend runs.
//!
//! Each check is an async function over a store built (asynchronously) with given limits and a
//! clock (time for recency and expiry; the checks drive a [`ManualClock`]). Nothing here spawns
//! tasks or blocks, so the suite runs on every target. Backends call
//! [`store_conformance_tests!`](crate::store_conformance_tests) in a native test module to get
//! one `#[tokio::test]` per check (the calling crate needs `tokio` with `macros` and `rt`), or
//! [`store_conformance_wasm_tests!`](crate::store_conformance_wasm_tests) for one
//! `#[wasm_bindgen_test]` per check (the calling crate needs `wasm-bindgen-test`):
//!
//! ```ignore
//! wasimoff_core::store_conformance_tests!(|limits, clock| MyStore::open_temp(limits, clock));
//! wasimoff_core::store_conformance_wasm_tests!(
//!     async |limits, clock| MyWebStore::open(limits, clock).await,
//!     skip: { ephemeral_blobs_expire: "no ephemeral blobs in this backend" }
//! );
//! ```

use std::time::Duration;

use bytes::Bytes;

use super::{
    AliasOptions, Clock, ManualClock, PutOptions, Ref, Store, StoreError, StoreLimits, media,
};

const WASM: &[u8] = b"\0asm\x01\0\0\0";
const ZIP: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn limits() -> StoreLimits {
    StoreLimits::default()
}

/// Bytes go in, the same bytes and their sniffed media type come out, by ref.
pub async fn put_then_get<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let store = make(limits(), Clock::system()).await;
    let r = store.put(Bytes::from_static(WASM)).await.expect("put");
    assert_eq!(r, Ref::of(WASM));
    let blob = store.get(r.as_str()).await.expect("get").expect("stored");
    assert_eq!(blob.bytes.as_ref(), WASM);
    assert_eq!(blob.media, media::WASM);
    assert_eq!(blob.r#ref, r);
    assert!(store.has(r.as_str()).await.expect("has"));
    assert_eq!(store.resolve(r.as_str()).await.expect("resolve"), Some(r));

    let z = store.put(Bytes::from_static(ZIP)).await.expect("put zip");
    assert_eq!(
        store
            .get(z.as_str())
            .await
            .expect("get")
            .expect("stored")
            .media,
        media::ZIP
    );
    let other = store
        .put(Bytes::from_static(b"plain"))
        .await
        .expect("put other");
    assert_eq!(
        store
            .get(other.as_str())
            .await
            .expect("get")
            .expect("stored")
            .media,
        media::OCTET_STREAM
    );
    let empty = store
        .put(Bytes::new())
        .await
        .expect("an empty blob is a blob");
    assert_eq!(
        store
            .get(empty.as_str())
            .await
            .expect("get")
            .expect("stored")
            .bytes
            .len(),
        0
    );
}

/// Storing the same bytes again returns the same ref and keeps one copy.
pub async fn put_is_idempotent<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let store = make(limits(), Clock::system()).await;
    let a = store.put(Bytes::from_static(WASM)).await.expect("put");
    let b = store
        .put(Bytes::from_static(WASM))
        .await
        .expect("put again");
    assert_eq!(a, b);
    assert_eq!(store.list().await.expect("list"), vec![a]);
}

/// Names that resolve to nothing give `None`, never an error or a panic.
pub async fn missing_names_are_none<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let store = make(limits(), Clock::system()).await;
    for name in [
        Ref::of(b"never stored").as_str(),
        "sha256:not-hex",
        "sha256:",
        "no-such-alias",
        "",
        "../../etc/passwd",
    ] {
        assert_eq!(store.get(name).await.expect("get"), None, "{name:?}");
        assert!(!store.has(name).await.expect("has"), "{name:?}");
        assert_eq!(
            store.resolve(name).await.expect("resolve"),
            None,
            "{name:?}"
        );
    }
    assert!(store.list().await.expect("list").is_empty());
}

/// Aliases name blobs, can be re-pointed, must name stored blobs and must be sane names.
pub async fn aliases<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let store = make(limits(), Clock::system()).await;
    let a = store.put(Bytes::from_static(WASM)).await.expect("put");
    let b = store.put(Bytes::from_static(ZIP)).await.expect("put");
    store.set_alias("app.wasm", &a).await.expect("alias");
    assert_eq!(
        store.resolve("app.wasm").await.expect("resolve"),
        Some(a.clone())
    );
    assert_eq!(
        store
            .get("app.wasm")
            .await
            .expect("get")
            .expect("stored")
            .bytes
            .as_ref(),
        WASM
    );
    store.set_alias("app.wasm", &b).await.expect("re-point");
    assert_eq!(store.resolve("app.wasm").await.expect("resolve"), Some(b));

    let missing = Ref::of(b"missing");
    assert!(matches!(
        store.set_alias("x", &missing).await,
        Err(StoreError::NotFound(_))
    ));
    for bad in [
        "",
        "a/b",
        "sha256:abc",
        ".hidden",
        "tab\there",
        &"x".repeat(256),
    ] {
        assert!(
            matches!(
                store.set_alias(bad, &a).await,
                Err(StoreError::InvalidAlias(..))
            ),
            "{bad:?} must be rejected"
        );
    }
}

/// Oversized blobs and a full store are refused with their own errors.
pub async fn limits_are_enforced<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let store = make(
        StoreLimits {
            max_blob_size: 16,
            max_total_size: Some(24),
            max_aliases: 1,
        },
        Clock::system(),
    )
    .await;
    assert_eq!(store.limits().max_blob_size, 16);
    let err = store
        .put(Bytes::from(vec![7u8; 17]))
        .await
        .expect_err("too large");
    assert_eq!(
        err,
        StoreError::TooLarge {
            size: 17,
            limit: 16
        }
    );
    let a = store.put(Bytes::from(vec![1u8; 16])).await.expect("fits");
    // Aliased, the blob cannot be evicted to make room.
    store.set_alias("one", &a).await.expect("first alias");
    let err = store
        .put(Bytes::from(vec![2u8; 9]))
        .await
        .expect_err("store full");
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    store
        .put(Bytes::from(vec![3u8; 8]))
        .await
        .expect("still fits");
    store
        .set_alias("one", &a)
        .await
        .expect("re-pointing does not count");
    assert!(matches!(
        store.set_alias("two", &a).await,
        Err(StoreError::Full(_))
    ));
    assert!(store.list().await.expect("list").len() == 2);
}

/// Deleting a blob removes its aliases and frees its space.
pub async fn delete_removes_blob_and_aliases<S: Store>(
    make: impl AsyncFn(StoreLimits, Clock) -> S,
) {
    let store = make(
        StoreLimits {
            max_total_size: Some(8),
            ..limits()
        },
        Clock::system(),
    )
    .await;
    let a = store.put(Bytes::from_static(WASM)).await.expect("put");
    store.set_alias("a", &a).await.expect("alias");
    assert!(store.delete(&a).await.expect("delete"));
    assert!(!store.delete(&a).await.expect("second delete"));
    assert_eq!(store.get("a").await.expect("get"), None);
    assert_eq!(store.get(a.as_str()).await.expect("get"), None);
    store
        .put(Bytes::from(vec![9u8; 8]))
        .await
        .expect("space was freed");
}

/// Many concurrent puts of the same and different bytes agree.
///
/// The puts run as concurrent futures of one task (not spawned tasks), so the check runs on
/// any target; they interleave at every await of the store.
pub async fn concurrent_puts<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let store = make(limits(), Clock::system()).await;
    let puts = (0..32u8).map(|i| {
        let store = &store;
        async move {
            let same = store.put(Bytes::from_static(WASM)).await.expect("put same");
            let own = store.put(Bytes::from(vec![i; 100])).await.expect("put own");
            (same, own)
        }
    });
    let mut own = Vec::new();
    for (same, mine) in futures::future::join_all(puts).await {
        assert_eq!(same, Ref::of(WASM));
        own.push(mine);
    }
    own.sort();
    own.dedup();
    assert_eq!(own.len(), 32);
    assert_eq!(store.list().await.expect("list").len(), 33);
}

fn limit(total: u64) -> StoreLimits {
    StoreLimits {
        max_total_size: Some(total),
        ..limits()
    }
}

fn blob(byte: u8, len: usize) -> Bytes {
    Bytes::from(vec![byte; len])
}

async fn sorted_list<S: Store>(store: &S) -> Vec<Ref> {
    let mut refs = store.list().await.expect("list");
    refs.sort();
    refs
}

fn sorted(mut refs: Vec<Ref>) -> Vec<Ref> {
    refs.sort();
    refs
}

/// A put over the total limit evicts the least recently used blob that nothing holds; a get is a
/// use.
pub async fn eviction_is_least_recently_used<S: Store>(
    make: impl AsyncFn(StoreLimits, Clock) -> S,
) {
    let time = ManualClock::new(1_000_000);
    let store = make(limit(30), time.clock()).await;
    let a = store.put(blob(1, 10)).await.expect("a");
    time.advance(Duration::from_secs(1));
    let b = store.put(blob(2, 10)).await.expect("b");
    time.advance(Duration::from_secs(1));
    let c = store.put(blob(3, 10)).await.expect("c");
    time.advance(Duration::from_secs(1));
    assert!(store.get(a.as_str()).await.expect("get").is_some());
    time.advance(Duration::from_secs(1));
    let d = store.put(blob(4, 10)).await.expect("room is made");
    assert_eq!(
        sorted_list(&store).await,
        sorted(vec![a.clone(), c.clone(), d.clone()]),
        "b was the least recently used"
    );
    assert_eq!(store.get(b.as_str()).await.expect("get"), None);
    time.advance(Duration::from_secs(1));
    // Storing bytes again is a use too.
    store.put(blob(3, 10)).await.expect("c again");
    time.advance(Duration::from_secs(1));
    let e = store.put(blob(5, 20)).await.expect("two make room");
    assert_eq!(sorted_list(&store).await, sorted(vec![c, e]));
}

/// Aliased and pinned blobs are never evicted; when nothing else can go, a put fails with
/// `Full` and evicts nothing.
pub async fn held_blobs_are_kept<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let time = ManualClock::new(1_000_000);
    let store = make(limit(30), time.clock()).await;
    let aliased = store.put(blob(1, 10)).await.expect("aliased");
    store.set_alias("kept", &aliased).await.expect("alias");
    time.advance(Duration::from_secs(1));
    let pinned = store
        .put_with(blob(2, 10), PutOptions::durable().pinned())
        .await
        .expect("pinned put");
    time.advance(Duration::from_secs(1));
    let plain = store.put(blob(3, 10)).await.expect("plain");
    time.advance(Duration::from_secs(1));
    let err = store.put(blob(4, 20)).await.expect_err("only 10 can go");
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    assert_eq!(
        sorted_list(&store).await,
        sorted(vec![aliased.clone(), pinned.clone(), plain.clone()]),
        "a failed put evicts nothing"
    );
    let err = store
        .put(blob(9, 31))
        .await
        .expect_err("larger than the store");
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    // A pin by name holds as well; unpinning twice releases both pins.
    assert_eq!(
        store.pin(plain.as_str()).await.expect("pin"),
        Some(plain.clone())
    );
    assert_eq!(store.pin("no-such-alias").await.expect("pin"), None);
    let err = store.put(blob(4, 10)).await.expect_err("all held");
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    store.unpin(&plain);
    store.unpin(&pinned);
    time.advance(Duration::from_secs(1));
    let big = store.put(blob(4, 20)).await.expect("both unpinned go");
    assert_eq!(
        sorted_list(&store).await,
        sorted(vec![aliased.clone(), big])
    );
    // A removed alias leaves its blob evictable.
    assert!(store.remove_alias("kept", None).await.expect("remove"));
    assert!(!store.remove_alias("kept", None).await.expect("again"));
    assert!(
        store.has(aliased.as_str()).await.expect("has"),
        "the blob stays"
    );
    time.advance(Duration::from_secs(1));
    store
        .put(blob(5, 10))
        .await
        .expect("the unaliased blob goes");
    assert_eq!(store.get(aliased.as_str()).await.expect("get"), None);
}

/// Ephemeral blobs vanish at their expiry unless pinned, are evicted before durable ones, and
/// become durable when stored durably or aliased.
pub async fn ephemeral_blobs_expire<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let time = ManualClock::new(1_000_000);
    let store = make(limit(40), time.clock()).await;
    let ttl = Duration::from_secs(60);
    let durable = store.put(blob(1, 10)).await.expect("durable");
    time.advance(Duration::from_secs(1));
    let output = store
        .put_with(blob(2, 10), PutOptions::ephemeral(ttl))
        .await
        .expect("ephemeral");
    time.advance(Duration::from_secs(59));
    assert!(store.has(output.as_str()).await.expect("has"), "not yet");
    time.advance(Duration::from_secs(1));
    assert!(!store.has(output.as_str()).await.expect("has"), "expired");
    assert_eq!(store.get(output.as_str()).await.expect("get"), None);
    assert_eq!(store.pin(output.as_str()).await.expect("pin"), None);
    assert_eq!(sorted_list(&store).await, vec![durable.clone()]);

    // Under pressure an ephemeral blob goes before an older durable one.
    let young = store
        .put_with(blob(3, 10), PutOptions::ephemeral(ttl))
        .await
        .expect("ephemeral");
    time.advance(Duration::from_secs(1));
    let other = store.put(blob(4, 20)).await.expect("durable");
    time.advance(Duration::from_secs(1));
    store.put(blob(5, 10)).await.expect("room");
    assert!(!store.has(young.as_str()).await.expect("has"));
    assert!(store.has(durable.as_str()).await.expect("has"));
    assert!(store.has(other.as_str()).await.expect("has"));

    // A pinned ephemeral blob outlives its expiry until unpinned.
    store.delete(&other).await.expect("delete");
    let held = store
        .put_with(blob(6, 10), PutOptions::ephemeral(ttl).pinned())
        .await
        .expect("pinned ephemeral");
    time.advance(ttl * 2);
    assert!(store.get(held.as_str()).await.expect("get").is_some());
    store.unpin(&held);
    assert!(!store.has(held.as_str()).await.expect("has"));

    // The same bytes stored durably, or aliased, no longer expire.
    let twice = store
        .put_with(blob(7, 5), PutOptions::ephemeral(ttl))
        .await
        .expect("ephemeral");
    assert_eq!(store.put(blob(7, 5)).await.expect("durable"), twice);
    let aliased = store
        .put_with(blob(8, 5), PutOptions::ephemeral(ttl))
        .await
        .expect("ephemeral");
    store.set_alias("out", &aliased).await.expect("alias");
    time.advance(ttl * 2);
    assert!(store.has(twice.as_str()).await.expect("has"));
    assert!(store.has("out").await.expect("has"));
}

/// An alias with an owner can be re-pointed or removed only by that owner; an owner's aliases
/// hold at most its quota, each distinct blob counted whole.
pub async fn alias_owners_and_quotas<S: Store>(make: impl AsyncFn(StoreLimits, Clock) -> S) {
    let store = make(limits(), Clock::system()).await;
    let alice = AliasOptions {
        owner: Some("alice"),
        quota: Some(20),
    };
    let bob = AliasOptions {
        owner: Some("bob"),
        quota: Some(20),
    };
    let a = store.put(blob(1, 10)).await.expect("a");
    let b = store.put(blob(2, 10)).await.expect("b");
    let c = store.put(blob(3, 10)).await.expect("c");
    store
        .set_alias_with("hello.wasm", &a, alice)
        .await
        .expect("alice creates");
    let err = store
        .set_alias_with("hello.wasm", &b, bob)
        .await
        .expect_err("bob may not take it");
    assert!(matches!(err, StoreError::Forbidden(_)), "{err:?}");
    assert_eq!(
        store.resolve("hello.wasm").await.expect("resolve"),
        Some(a.clone())
    );
    let err = store
        .remove_alias("hello.wasm", Some("bob"))
        .await
        .expect_err("nor remove it");
    assert!(matches!(err, StoreError::Forbidden(_)), "{err:?}");
    store
        .set_alias_with("hello.wasm", &b, alice)
        .await
        .expect("alice re-points");
    store
        .set_alias_with("copy.wasm", &b, alice)
        .await
        .expect("the same blob again is free");
    store
        .set_alias_with("a.wasm", &a, alice)
        .await
        .expect("20 bytes fit the quota");
    let err = store
        .set_alias_with("c.wasm", &c, alice)
        .await
        .expect_err("30 do not");
    assert_eq!(
        err,
        StoreError::QuotaExceeded {
            held: 20,
            adding: 10,
            limit: 20
        }
    );
    assert_eq!(store.resolve("c.wasm").await.expect("resolve"), None);
    // Bob pays for the same bytes in full.
    store
        .set_alias_with("bobs.wasm", &a, bob)
        .await
        .expect("bob's own alias");
    // Freeing an alias frees quota.
    assert!(
        store
            .remove_alias("a.wasm", Some("alice"))
            .await
            .expect("remove")
    );
    store
        .set_alias_with("c.wasm", &c, alice)
        .await
        .expect("fits again");
    // Without an owner nothing is checked (open mode) and the alias is left unowned.
    store
        .set_alias_with("hello.wasm", &c, AliasOptions::default())
        .await
        .expect("unchecked");
    store
        .set_alias_with("hello.wasm", &a, bob)
        .await
        .expect("unowned aliases can be taken");
}

/// Runs `$m!` with the name of every conformance check, so that the test macros below cannot
/// forget one.
#[doc(hidden)]
#[macro_export]
macro_rules! store_conformance_cases {
    ($m:ident ! ($($args:tt)*)) => {
        $crate::$m!($($args)*;
            put_then_get, put_is_idempotent, missing_names_are_none, aliases,
            limits_are_enforced, delete_removes_blob_and_aliases, concurrent_puts,
            eviction_is_least_recently_used, held_blobs_are_kept, ephemeral_blobs_expire,
            alias_owners_and_quotas);
    };
}

/// One `#[tokio::test]` per conformance check for the store built by `$make` (called with a
/// [`StoreLimits`](crate::store::StoreLimits) and a [`Clock`](crate::store::Clock)).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_cases!(store_conformance_tests!(@tests $make));
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let make = $make;
                $crate::store::conformance::$name(async |limits, clock| make(limits, clock)).await;
            }
        )*
    };
}

/// One `#[wasm_bindgen_test]` per conformance check for the store built by the async `$make`
/// (called with a [`StoreLimits`](crate::store::StoreLimits) and a
/// [`Clock`](crate::store::Clock)), for backends that run in browsers. `skip` names the checks
/// a backend truly cannot pass, each with the reason: their tests log the reason and pass, and
/// a test checks that every skipped name is a check.
#[macro_export]
macro_rules! store_conformance_wasm_tests {
    ($make:expr) => {
        $crate::store_conformance_wasm_tests!($make, skip: {});
    };
    ($make:expr, skip: { $($skip:ident: $reason:literal),* $(,)? }) => {
        const STORE_CONFORMANCE_SKIPPED: &[(&str, &str)] = &[$((stringify!($skip), $reason)),*];
        $crate::store_conformance_cases!(store_conformance_wasm_tests!(@tests $make));
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[::wasm_bindgen_test::wasm_bindgen_test]
            async fn $name() {
                if let Some((_, reason)) = STORE_CONFORMANCE_SKIPPED
                    .iter()
                    .find(|(skipped, _)| *skipped == stringify!($name))
                {
                    ::wasm_bindgen_test::console_log!("skipped {}: {}", stringify!($name), reason);
                    return;
                }
                $crate::store::conformance::$name($make).await;
            }
        )*

        #[::wasm_bindgen_test::wasm_bindgen_test]
        fn store_conformance_skips_name_checks() {
            let checks = [$(stringify!($name)),*];
            for (skipped, _) in STORE_CONFORMANCE_SKIPPED {
                assert!(checks.contains(skipped), "{skipped} is not a store conformance check");
            }
        }
    };
}
