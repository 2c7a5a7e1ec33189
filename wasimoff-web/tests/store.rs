//! [`BrowserStore`] in headless Chromium, inside a dedicated worker: the store conformance
//! checks on the OPFS and the memory backend, then persistence across instances, tamper
//! detection, the byte budget, the read cache and the fallback to memory. Every test works in
//! its own OPFS subdirectory, emptied first. Run: see docs/browser.md (`--test store`).
//!
//! The conformance checks are core's `store::conformance` suite, through
//! `store_conformance_wasm_tests!`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use js_sys::{Function, Object, Reflect, Uint8Array};
use wasimoff_core::store::{Ref, Store, StoreError, StoreLimits, media};
use wasimoff_web::store::{BrowserStore, BrowserStoreOptions};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{
    FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions,
    FileSystemGetFileOptions, FileSystemRemoveOptions, FileSystemWritableFileStream,
    WorkerGlobalScope,
};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const WASM: &[u8] = b"\0asm\x01\0\0\0";
const ZIP: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

// ---------------------------------------------------------------------------------------------
// OPFS helpers, straight on web-sys (independent of the code under test).

async fn root() -> FileSystemDirectoryHandle {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let promise = scope.navigator().storage().get_directory();
    JsFuture::from(promise)
        .await
        .expect("OPFS root")
        .unchecked_into()
}

async fn test_dir(name: &str) -> FileSystemDirectoryHandle {
    let options = FileSystemGetDirectoryOptions::new();
    options.set_create(true);
    JsFuture::from(
        root()
            .await
            .get_directory_handle_with_options(name, &options),
    )
    .await
    .expect("test directory")
    .unchecked_into()
}

/// Removes a test directory with everything in it.
async fn reset(name: &str) {
    let options = FileSystemRemoveOptions::new();
    options.set_recursive(true);
    // NotFoundError on the first run.
    let _ = JsFuture::from(root().await.remove_entry_with_options(name, &options)).await;
}

/// Writes a file in a test directory, bypassing the store.
async fn write_raw(dir: &str, file: &str, bytes: &[u8]) {
    let options = FileSystemGetFileOptions::new();
    options.set_create(true);
    let handle: FileSystemFileHandle = JsFuture::from(
        test_dir(dir)
            .await
            .get_file_handle_with_options(file, &options),
    )
    .await
    .expect("file handle")
    .unchecked_into();
    let stream: FileSystemWritableFileStream = JsFuture::from(handle.create_writable())
        .await
        .expect("createWritable")
        .unchecked_into();
    let chunk = Uint8Array::from(bytes);
    JsFuture::from(stream.write_with_js_u8_array(&chunk).expect("write"))
        .await
        .expect("write");
    JsFuture::from(stream.close()).await.expect("close");
}

/// Whether a file exists in a test directory.
async fn exists(dir: &str, file: &str) -> bool {
    match JsFuture::from(test_dir(dir).await.get_file_handle(file)).await {
        Ok(_) => true,
        Err(e) => {
            let name = Reflect::get(&e, &"name".into()).unwrap().as_string();
            assert_eq!(name.as_deref(), Some("NotFoundError"), "{e:?}");
            false
        }
    }
}

fn hex(r: &Ref) -> &str {
    r.as_str().strip_prefix(Ref::PREFIX).unwrap()
}

fn options(dir: &str) -> BrowserStoreOptions {
    BrowserStoreOptions {
        directory: dir.to_owned(),
        ..BrowserStoreOptions::default()
    }
}

/// A store in a fresh OPFS directory; fails the test if OPFS is not used.
async fn fresh_opfs(dir: &str, options: BrowserStoreOptions) -> BrowserStore {
    reset(dir).await;
    let store = BrowserStore::open(BrowserStoreOptions {
        directory: dir.to_owned(),
        ..options
    })
    .await;
    assert_eq!(
        (store.backend(), store.fallback_reason()),
        ("opfs", None),
        "OPFS must work in a Chromium worker"
    );
    store
}

async fn opfs_with_limits(dir: &str, limits: StoreLimits) -> BrowserStore {
    fresh_opfs(
        dir,
        BrowserStoreOptions {
            limits,
            ..BrowserStoreOptions::default()
        },
    )
    .await
}

async fn memory_with_limits(limits: StoreLimits) -> BrowserStore {
    let store = BrowserStore::open(BrowserStoreOptions {
        limits,
        force_memory: true,
        ..BrowserStoreOptions::default()
    })
    .await;
    assert_eq!(store.backend(), "memory");
    store
}

// ---------------------------------------------------------------------------------------------
// Core's store conformance suite, on both backends.

/// A fresh OPFS directory name for each store the suite builds.
fn next_dir() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("test-conformance-{n}")
}

/// The suite's limits as this store takes them: its total-size limit is the eviction budget
/// (`max_bytes`; `max_total_size` would be a hard limit here, which core's backends do not have).
fn suite_options(limits: StoreLimits) -> BrowserStoreOptions {
    BrowserStoreOptions {
        max_bytes: limits
            .max_total_size
            .unwrap_or(BrowserStoreOptions::default().max_bytes),
        limits: StoreLimits {
            max_total_size: None,
            ..limits
        },
        ..BrowserStoreOptions::default()
    }
}

mod opfs_conformance {
    use super::*;
    wasimoff_core::store_conformance_wasm_tests!(
        async |limits, _clock| fresh_opfs(&next_dir(), suite_options(limits)).await,
        skip: {
            limits_are_enforced: "run below, with max_total_size as this store's hard limit",
            held_blobs_are_kept: "a provider cache evicts aliased blobs (it fetches them again) and pins nothing",
            ephemeral_blobs_expire: "a provider's cache holds no task outputs: no expiry, no clock",
            alias_owners_and_quotas: "uploads with owners and quotas are the broker's, not a provider cache's"
        }
    );
}

mod memory_conformance {
    use super::*;
    wasimoff_core::store_conformance_wasm_tests!(
        async |limits, _clock| {
            let store = BrowserStore::open(BrowserStoreOptions {
                force_memory: true,
                ..suite_options(limits)
            })
            .await;
            assert_eq!(store.backend(), "memory");
            store
        },
        skip: {
            limits_are_enforced: "run below, with max_total_size as this store's hard limit",
            held_blobs_are_kept: "a provider cache evicts aliased blobs (it fetches them again) and pins nothing",
            ephemeral_blobs_expire: "a provider's cache holds no task outputs: no expiry, no clock",
            alias_owners_and_quotas: "uploads with owners and quotas are the broker's, not a provider cache's"
        }
    );
}

/// Core's `limits_are_enforced` with `max_total_size` as what it is here: a hard limit (`Full`,
/// no eviction), on both backends.
#[wasm_bindgen_test]
async fn limits_are_enforced_with_a_hard_total_limit() {
    wasimoff_core::store::conformance::limits_are_enforced(async |limits, _clock| {
        opfs_with_limits(&next_dir(), limits).await
    })
    .await;
    wasimoff_core::store::conformance::limits_are_enforced(async |limits, _clock| {
        memory_with_limits(limits).await
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// OPFS behaviour.

/// Blobs outlive the instance: a new one finds them (aliases are memory-only).
#[wasm_bindgen_test]
async fn blobs_persist_across_instances() {
    let dir = "test-persist";
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (module, large) = {
        let store = fresh_opfs(dir, options(dir)).await;
        let module = store.put(Bytes::from_static(WASM)).await.expect("put");
        let large = store.put(Bytes::from(big.clone())).await.expect("put");
        store.set_alias("app.wasm", &module).await.expect("alias");
        (module, large)
    };
    assert!(exists(dir, hex(&module)).await);

    let store = BrowserStore::open(options(dir)).await;
    assert_eq!(store.backend(), "opfs");
    let mut listed = store.list().await.expect("list");
    listed.sort();
    let mut expected = vec![module.clone(), large.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.used_bytes(), (WASM.len() + big.len()) as u64);
    let blob = store
        .get(module.as_str())
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(
        (blob.bytes.as_ref(), blob.media.as_str()),
        (WASM, media::WASM)
    );
    let blob = store.get(large.as_str()).await.expect("get").expect("kept");
    assert_eq!(blob.bytes.as_ref(), big.as_slice());
    assert_eq!(store.resolve("app.wasm").await.expect("resolve"), None);
    // Putting a known blob again is a no-op.
    assert_eq!(
        store.put(Bytes::from_static(WASM)).await.expect("put"),
        module
    );
    assert_eq!(store.list().await.expect("list").len(), 2);
}

/// A file whose bytes do not match its name is never served: the read is `None`, the file is
/// deleted and the blob leaves the index.
#[wasm_bindgen_test]
async fn tampered_file_is_deleted_not_served() {
    let dir = "test-tamper";
    let store = fresh_opfs(dir, options(dir)).await;
    let r = store
        .put(Bytes::from_static(b"genuine content"))
        .await
        .expect("put");
    store.set_alias("genuine", &r).await.expect("alias");
    write_raw(dir, hex(&r), b"forged content").await;

    assert_eq!(store.get(r.as_str()).await.expect("get"), None);
    assert!(!exists(dir, hex(&r)).await, "the forged file is deleted");
    assert!(!store.has(r.as_str()).await.expect("has"));
    assert_eq!(store.resolve("genuine").await.expect("resolve"), None);
    assert_eq!(store.list().await.expect("list"), Vec::<Ref>::new());
    assert_eq!(store.used_bytes(), 0);
    // The genuine bytes can be stored again.
    assert_eq!(
        store
            .put(Bytes::from_static(b"genuine content"))
            .await
            .expect("put"),
        r
    );
    assert_eq!(
        store
            .get(r.as_str())
            .await
            .expect("get")
            .expect("stored")
            .bytes
            .as_ref(),
        b"genuine content"
    );
}

/// A corrupt file found at open (say, a torn write) is indexed but fails verification.
#[wasm_bindgen_test]
async fn corrupt_file_found_at_open_is_rejected_on_read() {
    let dir = "test-corrupt-at-open";
    reset(dir).await;
    let r = Ref::of(b"the real thing");
    write_raw(dir, hex(&r), b"the real th").await;
    let store = BrowserStore::open(options(dir)).await;
    assert_eq!(store.backend(), "opfs");
    assert_eq!(store.list().await.expect("list"), vec![r.clone()]);
    assert_eq!(store.get(r.as_str()).await.expect("get"), None);
    assert!(!exists(dir, hex(&r)).await);
    assert_eq!(store.list().await.expect("list"), Vec::<Ref>::new());
}

/// Only lowercase hex sha256 names are blobs; other files are ignored and left alone.
#[wasm_bindgen_test]
async fn foreign_files_are_ignored() {
    let dir = "test-foreign";
    reset(dir).await;
    let r = Ref::of(WASM);
    let upper = hex(&r).to_uppercase();
    let short = &hex(&r)[..63];
    write_raw(dir, hex(&r), WASM).await;
    for name in ["notes.txt", upper.as_str(), short, ".tmp-in-progress"] {
        write_raw(dir, name, b"whatever").await;
    }
    let store = BrowserStore::open(options(dir)).await;
    assert_eq!(store.list().await.expect("list"), vec![r.clone()]);
    assert_eq!(store.used_bytes(), WASM.len() as u64);
    for name in ["notes.txt", upper.as_str(), short, ".tmp-in-progress"] {
        assert!(exists(dir, name).await, "{name} is left alone");
    }
    let blob = store.get(r.as_str()).await.expect("get").expect("stored");
    assert_eq!(blob.media, media::WASM);
}

/// A blob that was read is served from memory afterwards (so a later change of the file goes
/// unnoticed until the next instance, which verifies again).
#[wasm_bindgen_test]
async fn read_cache_serves_repeated_reads() {
    let dir = "test-read-cache";
    let store = fresh_opfs(dir, options(dir)).await;
    let r = store.put(Bytes::from_static(WASM)).await.expect("put");
    assert!(store.get(r.as_str()).await.expect("get").is_some());
    write_raw(dir, hex(&r), b"changed").await;
    let blob = store
        .get(r.as_str())
        .await
        .expect("get")
        .expect("from memory");
    assert_eq!(blob.bytes.as_ref(), WASM);

    // Without a read cache every read goes to OPFS and is verified.
    let uncached = BrowserStore::open(BrowserStoreOptions {
        read_cache_bytes: 0,
        ..options(dir)
    })
    .await;
    write_raw(dir, hex(&r), WASM).await;
    assert!(uncached.get(r.as_str()).await.expect("get").is_some());
    write_raw(dir, hex(&r), b"changed").await;
    assert_eq!(uncached.get(r.as_str()).await.expect("get"), None);
}

/// Blobs of `n` distinct bytes of value `v`.
fn filler(v: u8, n: usize) -> Bytes {
    Bytes::from(vec![v; n])
}

/// Under a budget, the least recently used blobs go (with their aliases and files).
async fn evicts_least_recently_used(store: BrowserStore, dir: Option<&str>) {
    let a = store.put(filler(1, 100)).await.expect("a");
    let b = store.put(filler(2, 100)).await.expect("b");
    store.set_alias("bee", &b).await.expect("alias");
    assert!(
        store.get(a.as_str()).await.expect("get").is_some(),
        "a is now newer than b"
    );
    let c = store.put(filler(3, 100)).await.expect("c evicts b");
    let mut listed = store.list().await.expect("list");
    listed.sort();
    let mut expected = vec![a.clone(), c.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.used_bytes(), 200);
    assert_eq!(store.resolve("bee").await.expect("resolve"), None);
    assert_eq!(store.get(b.as_str()).await.expect("get"), None);
    if let Some(dir) = dir {
        assert!(!exists(dir, hex(&b)).await, "b's file is removed");
        assert!(exists(dir, hex(&a)).await && exists(dir, hex(&c)).await);
    }
    // A put of known bytes counts as a use: now c is the oldest.
    store.put(filler(1, 100)).await.expect("a again");
    store.put(filler(4, 150)).await.expect("d evicts c");
    let listed = store.list().await.expect("list");
    assert!(listed.contains(&a) && !listed.contains(&c), "{listed:?}");
    assert_eq!(store.used_bytes(), 250);
    // Nothing larger than the whole budget.
    assert_eq!(
        store.put(filler(5, 251)).await,
        Err(StoreError::TooLarge {
            size: 251,
            limit: 250
        })
    );
    assert_eq!(store.limits().max_blob_size, 250);
}

#[wasm_bindgen_test]
async fn opfs_evicts_least_recently_used() {
    let dir = "test-evict";
    let store = fresh_opfs(
        dir,
        BrowserStoreOptions {
            max_bytes: 250,
            ..options(dir)
        },
    )
    .await;
    evicts_least_recently_used(store, Some(dir)).await;
}

#[wasm_bindgen_test]
async fn memory_evicts_least_recently_used() {
    let store = BrowserStore::memory(BrowserStoreOptions {
        max_bytes: 250,
        ..BrowserStoreOptions::default()
    });
    evicts_least_recently_used(store, None).await;
}

/// Opening with a smaller budget than the files found evicts down to it.
#[wasm_bindgen_test]
async fn open_evicts_beyond_the_budget() {
    let dir = "test-evict-at-open";
    {
        let store = fresh_opfs(dir, options(dir)).await;
        for v in 0..4 {
            store.put(filler(v, 100)).await.expect("put");
        }
    }
    let store = BrowserStore::open(BrowserStoreOptions {
        max_bytes: 250,
        ..options(dir)
    })
    .await;
    assert_eq!(store.blob_count(), 2);
    assert_eq!(store.used_bytes(), 200);
    let files = [0, 1, 2, 3].map(|v| Ref::of(&[v; 100]));
    let mut on_disk = 0;
    for r in &files {
        on_disk += usize::from(exists(dir, hex(r)).await);
    }
    assert_eq!(on_disk, 2, "evicted files are removed");
}

/// `clear` empties the index and the directory.
#[wasm_bindgen_test]
async fn clear_removes_everything() {
    let dir = "test-clear";
    let store = fresh_opfs(dir, options(dir)).await;
    let r = store.put(Bytes::from_static(WASM)).await.expect("put");
    store.set_alias("x", &r).await.expect("alias");
    store.clear().await.expect("clear");
    assert_eq!(store.list().await.expect("list"), Vec::<Ref>::new());
    assert_eq!(store.resolve("x").await.expect("resolve"), None);
    assert!(!exists(dir, hex(&r)).await);
    assert_eq!(BrowserStore::open(options(dir)).await.blob_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Falling back to memory.

/// `force_memory` never touches OPFS.
#[wasm_bindgen_test]
async fn forced_memory_backend() {
    let dir = "test-forced-memory";
    reset(dir).await;
    let store = BrowserStore::open(BrowserStoreOptions {
        force_memory: true,
        ..options(dir)
    })
    .await;
    assert_eq!(store.backend(), "memory");
    assert!(store.fallback_reason().is_some());
    let r = store.put(Bytes::from_static(WASM)).await.expect("put");
    assert_eq!(
        store
            .get(r.as_str())
            .await
            .expect("get")
            .expect("stored")
            .media,
        media::WASM
    );
    let listing = root().await.entries();
    let mut names = Vec::new();
    loop {
        let step = JsFuture::from(listing.next().unwrap()).await.unwrap();
        if Reflect::get(&step, &"done".into()).unwrap().is_truthy() {
            break;
        }
        let pair: js_sys::Array = Reflect::get(&step, &"value".into())
            .unwrap()
            .unchecked_into();
        names.push(pair.get(0).as_string().unwrap());
    }
    assert!(!names.iter().any(|n| n == dir), "no directory was created");
}

/// A directory name OPFS rejects falls back to memory, with the reason.
#[wasm_bindgen_test]
async fn unusable_directory_falls_back_to_memory() {
    for bad in ["..", "a/b", ""] {
        let store = BrowserStore::open(options(bad)).await;
        assert_eq!(store.backend(), "memory", "{bad:?}");
        let reason = store.fallback_reason().expect("a reason");
        assert!(reason.contains("directory"), "{bad:?}: {reason}");
        store
            .put(Bytes::from_static(WASM))
            .await
            .expect("still a store");
    }
}

/// Without `navigator.storage.getDirectory` (Firefox private mode, old browsers, Node.js) the
/// store keeps working in memory.
#[wasm_bindgen_test]
async fn missing_opfs_falls_back_to_memory() {
    let manager: Object = Reflect::get(&js_sys::global(), &"StorageManager".into())
        .and_then(|c| Reflect::get(&c, &"prototype".into()))
        .unwrap()
        .unchecked_into();
    let original = Reflect::get(&manager, &"getDirectory".into()).unwrap();
    assert!(original.is_instance_of::<Function>());

    Reflect::set(&manager, &"getDirectory".into(), &JsValue::UNDEFINED).unwrap();
    let missing = BrowserStore::open(options("test-no-opfs")).await;
    // getDirectory that rejects, like Firefox in private browsing.
    let rejecting = Function::new_no_args(
        "return Promise.reject(new DOMException('The operation is insecure.', 'SecurityError'))",
    );
    Reflect::set(&manager, &"getDirectory".into(), &rejecting).unwrap();
    let rejected = BrowserStore::open(options("test-no-opfs")).await;
    Reflect::set(&manager, &"getDirectory".into(), &original).unwrap();

    assert_eq!(missing.backend(), "memory");
    let reason = missing.fallback_reason().expect("a reason");
    assert!(reason.contains("getDirectory"), "{reason}");
    assert_eq!(rejected.backend(), "memory");
    let reason = rejected.fallback_reason().expect("a reason");
    assert!(reason.contains("SecurityError"), "{reason}");
    for store in [missing, rejected] {
        let r = store.put(Bytes::from_static(ZIP)).await.expect("put");
        assert_eq!(
            store
                .get(r.as_str())
                .await
                .expect("get")
                .expect("stored")
                .bytes
                .as_ref(),
            ZIP
        );
    }
    // Restored: OPFS is back.
    assert_eq!(
        BrowserStore::open(options("test-no-opfs")).await.backend(),
        "opfs"
    );
}

// ---------------------------------------------------------------------------------------------
// How files are written.

/// Names in a test directory.
async fn names_in(dir: &str) -> Vec<String> {
    let listing = test_dir(dir).await.entries();
    let mut names = Vec::new();
    loop {
        let step = JsFuture::from(listing.next().unwrap()).await.unwrap();
        if Reflect::get(&step, &"done".into()).unwrap().is_truthy() {
            break;
        }
        let pair: js_sys::Array = Reflect::get(&step, &"value".into())
            .unwrap()
            .unchecked_into();
        names.push(pair.get(0).as_string().unwrap());
    }
    names.sort();
    names
}

/// Replaces `FileSystemFileHandle.prototype.move` (where Chromium defines it) with
/// `replacement(original)` until the returned function is called.
fn patch_move(replacement: &str) -> Function {
    let patch = Function::new_no_args(&format!(
        "const proto = FileSystemFileHandle.prototype;
         const original = proto.move;
         proto.move = ({replacement})(original);
         return () => {{ proto.move = original; }};"
    ));
    patch.call0(&JsValue::NULL).unwrap().unchecked_into()
}

/// Blobs are written to a temporary name and renamed into place: `move()` runs once per new
/// blob (plus the probe at open) and no temporary file stays behind.
#[wasm_bindgen_test]
async fn blobs_are_renamed_into_place() {
    let dir = "test-rename";
    reset(dir).await;
    let restore = patch_move(
        "(original) => function(...args) { self.__moves = (self.__moves || 0) + 1; \
         return original.apply(this, args); }",
    );
    let store = BrowserStore::open(options(dir)).await;
    let a = store.put(Bytes::from_static(WASM)).await.expect("put");
    let b = store.put(Bytes::from_static(ZIP)).await.expect("put");
    store
        .put(Bytes::from_static(WASM))
        .await
        .expect("known: no write");
    restore.call0(&JsValue::NULL).unwrap();
    let moves = Reflect::get(&js_sys::global(), &"__moves".into())
        .unwrap()
        .as_f64();
    assert_eq!(store.backend(), "opfs");
    assert_eq!(moves, Some(3.0), "probe + two blobs");
    let mut expected = vec![hex(&a).to_owned(), hex(&b).to_owned()];
    expected.sort();
    assert_eq!(names_in(dir).await, expected);
}

/// Without `move()` (older OPFS implementations) blobs are written under their name directly.
#[wasm_bindgen_test]
async fn works_without_move() {
    let dir = "test-no-move";
    reset(dir).await;
    let restore = patch_move("() => undefined");
    let store = BrowserStore::open(options(dir)).await;
    let r = store.put(Bytes::from_static(WASM)).await.expect("put");
    restore.call0(&JsValue::NULL).unwrap();
    assert_eq!(store.backend(), "opfs");
    assert_eq!(names_in(dir).await, vec![hex(&r).to_owned()]);
    let reopened = BrowserStore::open(options(dir)).await;
    assert_eq!(
        reopened
            .get(r.as_str())
            .await
            .expect("get")
            .expect("kept")
            .bytes
            .as_ref(),
        WASM
    );
}

/// A `move()` that fails after the probe (say, the quota) falls back to a direct write.
#[wasm_bindgen_test]
async fn failing_move_falls_back_to_a_direct_write() {
    let dir = "test-move-fails";
    reset(dir).await;
    let store = BrowserStore::open(options(dir)).await;
    let restore = patch_move(
        "() => function() { return Promise.reject(new DOMException('nope', 'InvalidStateError')); }",
    );
    let put = store.put(Bytes::from_static(ZIP)).await;
    restore.call0(&JsValue::NULL).unwrap();
    let r = put.expect("put");
    assert_eq!(
        names_in(dir).await,
        vec![hex(&r).to_owned()],
        "temp file removed"
    );
    assert_eq!(
        store
            .get(r.as_str())
            .await
            .expect("get")
            .expect("stored")
            .bytes
            .as_ref(),
        ZIP
    );
}
