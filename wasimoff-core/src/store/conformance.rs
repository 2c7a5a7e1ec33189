//! The conformance suite every [`Store`] backend runs.
//!
//! Each check is an async function over a store built with given limits. Backends call
//! [`store_conformance_tests!`](crate::store_conformance_tests) in a test module to get one
//! `#[tokio::test]` per check (the calling crate needs `tokio` with `macros` and `rt`):
//!
//! ```ignore
//! wasimoff_core::store_conformance_tests!(|limits| MyStore::open_temp(limits));
//! ```

use std::sync::Arc;

use bytes::Bytes;

use super::{Ref, Store, StoreError, StoreLimits, media};

const WASM: &[u8] = b"\0asm\x01\0\0\0";
const ZIP: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn limits() -> StoreLimits {
    StoreLimits::default()
}

/// Bytes go in, the same bytes and their sniffed media type come out, by ref.
pub async fn put_then_get<S: Store>(make: impl Fn(StoreLimits) -> S) {
    let store = make(limits());
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
pub async fn put_is_idempotent<S: Store>(make: impl Fn(StoreLimits) -> S) {
    let store = make(limits());
    let a = store.put(Bytes::from_static(WASM)).await.expect("put");
    let b = store
        .put(Bytes::from_static(WASM))
        .await
        .expect("put again");
    assert_eq!(a, b);
    assert_eq!(store.list().await.expect("list"), vec![a]);
}

/// Names that resolve to nothing give `None`, never an error or a panic.
pub async fn missing_names_are_none<S: Store>(make: impl Fn(StoreLimits) -> S) {
    let store = make(limits());
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
pub async fn aliases<S: Store>(make: impl Fn(StoreLimits) -> S) {
    let store = make(limits());
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
pub async fn limits_are_enforced<S: Store>(make: impl Fn(StoreLimits) -> S) {
    let store = make(StoreLimits {
        max_blob_size: 16,
        max_total_size: Some(24),
        max_aliases: 1,
    });
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
    let err = store
        .put(Bytes::from(vec![2u8; 9]))
        .await
        .expect_err("store full");
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    store
        .put(Bytes::from(vec![3u8; 8]))
        .await
        .expect("still fits");
    store.set_alias("one", &a).await.expect("first alias");
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
pub async fn delete_removes_blob_and_aliases<S: Store>(make: impl Fn(StoreLimits) -> S) {
    let store = make(StoreLimits {
        max_total_size: Some(8),
        ..limits()
    });
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
pub async fn concurrent_puts<S: Store + 'static>(make: impl Fn(StoreLimits) -> S) {
    let store = Arc::new(make(limits()));
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let same = store.put(Bytes::from_static(WASM)).await.expect("put same");
            let own = store.put(Bytes::from(vec![i; 100])).await.expect("put own");
            (same, own)
        }));
    }
    let mut own = Vec::new();
    for task in tasks {
        let (same, mine) = task.await.expect("task");
        assert_eq!(same, Ref::of(WASM));
        own.push(mine);
    }
    own.sort();
    own.dedup();
    assert_eq!(own.len(), 32);
    assert_eq!(store.list().await.expect("list").len(), 33);
}

/// One `#[tokio::test]` per conformance check for the store built by `$make` (called with a
/// [`StoreLimits`](crate::store::StoreLimits)).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            put_then_get, put_is_idempotent, missing_names_are_none, aliases,
            limits_are_enforced, delete_removes_blob_and_aliases, concurrent_puts);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::store::conformance::$name($make).await;
            }
        )*
    };
}
