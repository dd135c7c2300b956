//! In-process ABI tests: the extern fns called through `C_GetFunctionList` /
//! `C_GetInterface`, as a host would.

use crate::allow::Func;
use parking_lot::Mutex;

/// Serialises the tests that touch the module's global state (one instance per process).
pub(crate) static STATE_LOCK: Mutex<()> = Mutex::new(());

/// The test-only panic hook: a function named here panics inside its guard.
static PANIC_IN: Mutex<Option<Func>> = Mutex::new(None);

/// Called by [`super::guard`] in test builds.
pub(crate) fn maybe_panic(func: Func) {
    if *PANIC_IN.lock() == Some(func) {
        panic!("test hook: panic in {}", func.name());
    }
}
