//! The anonymous shared mappings the master makes before it forks its workers (imports.rs's
//! ledger, seats.rs's table): zero-filled by the kernel, never unmapped, the same pages in
//! every worker.

/// A zero-filled `T` in a fresh anonymous shared mapping; `None` if the mapping fails.
///
/// # Safety
/// All-zero bytes must be a valid `T` (integers and atomics are), and `T` is used only through
/// atomics, since other processes write it too.
pub(super) unsafe fn zeroed<T>() -> Option<&'static T> {
    // SAFETY: a fresh anonymous shared mapping, checked; never unmapped, so the 'static
    // reference stays valid; the kernel zero-fills it (the caller vouches that is a valid T).
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<T>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(&*p.cast::<T>())
    }
}

/// A zeroed `T` in private memory, leaked (tests).
///
/// # Safety
/// As [`zeroed`].
#[cfg(test)]
pub(super) unsafe fn private_zeroed<T>() -> &'static T {
    let layout = std::alloc::Layout::new::<T>();
    // SAFETY: the caller vouches all-zero is a valid T; leaked, so it lives for 'static.
    unsafe { &*std::alloc::alloc_zeroed(layout).cast::<T>() }
}
