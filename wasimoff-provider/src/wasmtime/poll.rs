//! `poll_oneoff`, the one WASI preview 1 call of this host that can wait, linked over
//! wasmtime-wasi's own (in both `wasi_snapshot_preview1` and `wasi_unstable`) so that a guest
//! waiting in it stops at its deadline or cancellation like a guest that computes.
//!
//! wasmtime-wasi's synchronous `poll_oneoff` waits without knowing about either: one relative
//! clock subscription (what `sleep` in Rust and C becomes) is a plain `std::thread::sleep`,
//! anything else is a tokio future driven to completion on this thread. Here the first case is
//! a [`TaskGuard::sleep_until`] (as precise as the thread sleep, and woken by a cancel), and
//! every other call runs the same wasmtime-wasi implementation (its public, generated ABI
//! function, exactly as its linker would) under [`TaskGuard::bound`], which drops it at the
//! deadline or on a cancel. Either way the guest ends with the guard's [`Interrupt`], so it is
//! reported as `TimedOut` or `Cancelled` just like a guest stopped by the epoch callback.
//!
//! Nothing else waits: stdin is an in-memory pipe (reads return what is left, then end of
//! file), stdout and stderr are capped in-memory sinks, files are regular files in the task's
//! own directory (WASI cannot create FIFOs or reach devices) and no sockets are offered, so
//! reads, writes and fd subscriptions are ready at once.

use std::time::{Duration, Instant};

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p0::wasi_unstable::{self, WasiUnstable};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self, WasiSnapshotPreview1};
use wiggle::{GuestMemory, GuestPtr};

use super::engine::Host;

/// The two layouts of `poll_oneoff`'s subscriptions.
#[derive(Clone, Copy, Debug)]
enum Abi {
    /// `wasi_snapshot_preview1`: 48-byte subscriptions.
    Preview1,
    /// `wasi_unstable`: 56 bytes, the clock has an `identifier` before its id.
    Unstable,
}

impl Abi {
    fn module(self) -> &'static str {
        match self {
            Abi::Preview1 => "wasi_snapshot_preview1",
            Abi::Unstable => "wasi_unstable",
        }
    }

    /// Bytes of one subscription.
    fn subscription_size(self) -> u32 {
        match self {
            Abi::Preview1 => 48,
            Abi::Unstable => 56,
        }
    }

    /// Offset of a clock subscription's clock id in a subscription; its timeout is 8 bytes
    /// later, its flags 24.
    fn clock_id(self) -> usize {
        match self {
            Abi::Preview1 => 16,
            Abi::Unstable => 24,
        }
    }
}

/// Bytes of one event (the same in both layouts).
const EVENT_SIZE: u32 = 32;
/// `eventtype::clock`, the tag of a clock subscription.
const EVENTTYPE_CLOCK: u8 = 0;
/// The largest valid clock id (`thread_cputime_id`).
const MAX_CLOCK_ID: u32 = 3;

/// Links the bounded `poll_oneoff` over the one `wasmtime_wasi` added to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    for abi in [Abi::Preview1, Abi::Unstable] {
        linker.func_wrap(
            abi.module(),
            "poll_oneoff",
            move |caller: Caller<'_, Host>, subs: i32, events: i32, count: i32, nevents: i32| {
                poll_oneoff(caller, abi, [subs, events, count, nevents])
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// One `poll_oneoff(subscriptions, events, count, nevents_ptr) -> errno` call.
fn poll_oneoff(mut caller: Caller<'_, Host>, abi: Abi, args: [i32; 4]) -> wasmtime::Result<i32> {
    // The same preparation as the wasmtime-wasi linker's.
    let export = caller.get_export("memory");
    let fuel = caller.as_context_mut().hostcall_fuel();
    let (mut memory, host) = match &export {
        Some(Extern::Memory(memory)) => {
            let (bytes, host) = memory.data_and_store_mut(&mut caller);
            (GuestMemory::Unshared(bytes), host)
        }
        Some(Extern::SharedMemory(memory)) => {
            (GuestMemory::Shared(memory.data()), caller.data_mut())
        }
        _ => wasmtime::bail!("missing required memory export"),
    };
    let Host { wasi, guard, .. } = host;

    let [subs, events, count, nevents] = args;
    if let Some(sleep) = lone_relative_clock(&memory, abi, subs, count) {
        // Where the event and its count go must be valid before the wait, not only after.
        let event = GuestPtr::<u8>::new(events as u32).as_array(EVENT_SIZE);
        if !(events as u32).is_multiple_of(8) {
            wasmtime::bail!("poll_oneoff: events pointer {events:#x} is not 8-byte aligned");
        }
        memory.as_cow(event)?;
        memory.read(GuestPtr::<u32>::new(nevents as u32))?;

        let until = Instant::now().checked_add(Duration::from_nanos(sleep.timeout));
        guard.sleep_until(until)?;
        // What wasmtime-wasi writes for this case: one clock event, `nbytes` 1.
        let mut bytes = [0u8; EVENT_SIZE as usize];
        bytes[..8].copy_from_slice(&sleep.userdata.to_le_bytes());
        bytes[10] = EVENTTYPE_CLOCK;
        bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
        memory.copy_from_slice(&bytes, event)?;
        memory.write(GuestPtr::<u32>::new(nevents as u32), 1)?;
        return Ok(0);
    }

    let call = async {
        match abi {
            Abi::Preview1 => {
                WasiSnapshotPreview1::set_hostcall_fuel(wasi, fuel);
                wasi_snapshot_preview1::poll_oneoff(wasi, &mut memory, subs, events, count, nevents)
                    .await
            }
            Abi::Unstable => {
                WasiUnstable::set_hostcall_fuel(wasi, fuel);
                wasi_unstable::poll_oneoff(wasi, &mut memory, subs, events, count, nevents).await
            }
        }
    };
    wasmtime_wasi::runtime::in_tokio(guard.bound(call))?
}

/// A lone relative clock subscription.
#[derive(Debug, PartialEq, Eq)]
struct Sleep {
    userdata: u64,
    timeout: u64,
}

/// The call wasmtime-wasi answers with `std::thread::sleep`: exactly one subscription, a
/// clock (any valid id) without the `abstime` flag. `None` for anything else, including
/// subscriptions it would refuse (bad pointers, tags, ids or flags), so that its own code
/// answers those.
fn lone_relative_clock(memory: &GuestMemory<'_>, abi: Abi, subs: i32, count: i32) -> Option<Sleep> {
    if count != 1 || !(subs as u32).is_multiple_of(8) {
        return None;
    }
    let bytes = memory
        .as_cow(GuestPtr::<u8>::new(subs as u32).as_array(abi.subscription_size()))
        .ok()?;
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let clock = abi.clock_id();
    let id = u32::from_le_bytes(bytes.get(clock..clock + 4)?.try_into().ok()?);
    let flags = u16::from_le_bytes(bytes.get(clock + 24..clock + 26)?.try_into().ok()?);
    if *bytes.get(8)? != EVENTTYPE_CLOCK || id > MAX_CLOCK_ID || flags != 0 {
        return None;
    }
    Some(Sleep {
        userdata: u64_at(0)?,
        timeout: u64_at(clock + 8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscription in `abi`'s layout.
    fn subscription(abi: Abi, tag: u8, id: u32, timeout: u64, flags: u16) -> Vec<u8> {
        let mut bytes = vec![0u8; abi.subscription_size() as usize];
        bytes[..8].copy_from_slice(&42u64.to_le_bytes());
        bytes[8] = tag;
        let clock = abi.clock_id();
        bytes[clock..clock + 4].copy_from_slice(&id.to_le_bytes());
        bytes[clock + 8..clock + 16].copy_from_slice(&timeout.to_le_bytes());
        bytes[clock + 24..clock + 26].copy_from_slice(&flags.to_le_bytes());
        bytes
    }

    #[test]
    fn only_a_lone_relative_clock_is_served_here() {
        for abi in [Abi::Preview1, Abi::Unstable] {
            let mut bytes = vec![0u8; 8];
            bytes.extend(subscription(abi, 0, 1, 5_000, 0));
            let memory = GuestMemory::Unshared(&mut bytes);
            let sleep = Sleep {
                userdata: 42,
                timeout: 5_000,
            };
            assert_eq!(lone_relative_clock(&memory, abi, 8, 1), Some(sleep));
            assert_eq!(
                lone_relative_clock(&memory, abi, 8, 2),
                None,
                "two subscriptions"
            );
            assert_eq!(lone_relative_clock(&memory, abi, 4, 1), None, "misaligned");
            assert_eq!(
                lone_relative_clock(&memory, abi, 16, 1),
                None,
                "out of bounds"
            );
            for (tag, id, flags, what) in [
                (1, 1, 0, "fd_read"),
                (0, 1, 1, "absolute"),
                (0, 1, 2, "unknown flag"),
                (0, 4, 0, "unknown clock"),
            ] {
                let mut bytes = subscription(abi, tag, id, 5_000, flags);
                let memory = GuestMemory::Unshared(&mut bytes);
                assert_eq!(lone_relative_clock(&memory, abi, 0, 1), None, "{what}");
            }
        }
    }
}
