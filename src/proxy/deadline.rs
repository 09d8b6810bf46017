//! A deadline around an operation the caller already pinned, with the timer armed lazily.
//!
//! Owns only that combinator. `monoio::time::timeout(d, op)` moves the whole operation future
//! into its own (a memcpy of the state machine per read or write, twice with `.await`'s
//! `IntoFuture`), reads the clock and registers a timer before the operation was even polled.
//! [`Deadline`] borrows the pinned operation instead, polls it first, and only when it is
//! pending reads the clock and arms the timer: an operation ready at once (the common case on
//! the epoll driver, where a socket already readable or writable is served by its first poll)
//! costs no timer at all. The deadline counts from that first pending poll, so it is never
//! shorter than asked.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::time::Sleep;

/// The deadline passed before the operation finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// See the module docs; built by [`within`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Deadline<'a, F: ?Sized> {
        op: Pin<&'a mut F>,
        within: Duration,
        #[pin]
        timer: Option<Sleep>,
    }
}

/// Runs the pinned `op` for at most `within` (from its first pending poll).
pub fn within<F: Future + ?Sized>(op: Pin<&mut F>, within: Duration) -> Deadline<'_, F> {
    Deadline {
        op,
        within,
        timer: None,
    }
}

impl<F: Future + ?Sized> Future for Deadline<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut me = self.project();
        if let Poll::Ready(out) = me.op.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if me.timer.is_none() {
            me.timer.set(Some(monoio::time::sleep(*me.within)));
        }
        match me.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_ops_pass_and_pending_ops_time_out() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let ready = std::pin::pin!(async { 7 });
            assert_eq!(within(ready, Duration::from_millis(1)).await, Ok(7));

            let never = std::pin::pin!(std::future::pending::<()>());
            let started = std::time::Instant::now();
            assert_eq!(within(never, Duration::from_millis(20)).await, Err(Elapsed));
            assert!(started.elapsed() >= Duration::from_millis(20));

            // Finishes after a pending poll, before its deadline.
            let slow = std::pin::pin!(monoio::time::sleep(Duration::from_millis(5)));
            assert_eq!(within(slow, Duration::from_secs(5)).await, Ok(()));
        });
    }
}
