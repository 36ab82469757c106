//! A thread that renews something (a lease, a group membership) every period until stopped.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The renewing thread; stopped (and joined) by [`Renewer::stop`] or on drop.
pub(crate) struct Renewer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Renewer {
    /// Starts a thread named `name` that calls `renew` every `period`.
    pub fn start(
        name: &str,
        period: Duration,
        mut renew: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let (flag, wake) = &*stopping;
                let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    // Checks the flag before waiting: a stop signalled before this thread
                    // waited is seen.
                    let (guard, _) = wake
                        .wait_timeout_while(stopped, period, |s| !*s)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *guard {
                        return;
                    }
                    drop(guard);
                    renew();
                    stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread still renews (not stopped yet).
    pub fn is_running(&self) -> bool {
        self.thread.is_some()
    }

    /// Stops the thread and waits for it: no renewal runs once this returns.
    pub fn stop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.stop();
    }
}
